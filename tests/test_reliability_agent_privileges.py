"""Least privilege (issue 10): after attaching, the agent keeps no capability this kernel does not
ask for. Started as root with only the DaemonSet's capabilities (setpriv: bounding set = the
manifest's `add` list, no_new_privs, like containerd with allowPrivilegeEscalation: false), every
thread of the running agent has empty effective and permitted sets, and it still measures: a
cgroup created after the drop gets fresh series (the agent started with the DaemonSet's command,
-OO included), and when it is removed its entry is deleted from
the BPF map (map reads and deletes through the held fds need no capability here). As plain root
the bounding set is emptied as well. Figures: `pytest -s` prints a `privileges:` line."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from agent_helpers import one_value, samples_for
from conftest import require_root
from prometheus_client.parser import text_string_to_metric_families
from prometheus_helpers import free_port

from runqscale.agent import bench_install, privdrop
from runqscale.probes import core
from runqscale.probes.model import Hierarchy
from runqscale.validation.sandbox import PERIODIC, Sandbox

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parent.parent
RUNQSCALE = str(Path(sys.executable).parent / "runqscale")
DAEMONSET = REPO / "deploy/base/agent-daemonset.yaml"


def daemonset_caps() -> list[str]:
    doc = yaml.safe_load(DAEMONSET.read_text())
    sc = doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    return list(sc["capabilities"]["add"])


def task_caps(pid: int) -> dict[int, dict[str, int]]:
    """tid -> {CapInh, CapPrm, CapEff, CapBnd, CapAmb, NoNewPrivs} of every thread."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = {}
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k.startswith("Cap"):
                        fields[k] = int(v, 16)
                    elif k == "NoNewPrivs":
                        fields[k] = int(v)
        except FileNotFoundError:  # the thread ended between the listing and the read
            continue
        out[int(tid)] = fields
    return out


def daemonset_command() -> list[str]:
    """The DaemonSet's agent command with this venv's interpreter for its `python3`: the agent
    runs here as it runs on a node (its interpreter flags, -OO, included)."""
    cmd = bench_install.daemonset_command(str(REPO))
    return [sys.executable, *cmd[1:]] if cmd[0].startswith("python") else [RUNQSCALE, *cmd[1:]]


class Started:
    def __init__(self, prefix: list[str], *args: str, command: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*prefix, *(command or [RUNQSCALE, "agent"]), "--listen", f"127.0.0.1:{self.port}",
             "--backend", "core", "--pods-source", "none", "--interval", "0.5s", "--window",
             "2s", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd="/")  # `-m`: the checkout's directory is not what is installed

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return r.read().decode()

    def scrape(self) -> dict:
        out: dict = {}
        for fam in text_string_to_metric_families(self.metrics()):
            out.setdefault(fam.name, []).extend(fam.samples)
        return out

    def wait_serving(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: "
                                     f"{self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                if "runqscale_agent_events_total" in self.metrics():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("agent not serving")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
        return err


def _map_id_of(pid: int, name: str = "hists") -> int:
    """The id of the agent's histogram map, from its own fds (bpftool prints the names)."""
    ids = []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("map_id:"):
                        ids.append(int(line.split()[1]))
        except OSError:
            continue
    for mid in ids:
        info = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(mid)],
                                         capture_output=True, text=True, check=True).stdout)
        if info.get("name") == name:
            return mid
    raise AssertionError(f"no map named {name} among the agent's maps {ids}")


def _in_map(map_id: int, cgroup_id: int) -> bool:
    key = [str(b) for b in struct.pack("<Q", cgroup_id)]
    r = subprocess.run(["bpftool", "-j", "map", "lookup", "id", str(map_id), "key", *key],
                       capture_output=True, text=True)
    return r.returncode == 0


def test_daemonset_caps_are_dropped_after_attach_and_the_agent_keeps_measuring() -> None:
    require_root()
    if not shutil.which("setpriv") or not shutil.which("bpftool"):
        pytest.skip("needs setpriv (util-linux) and bpftool")
    caps = daemonset_caps()
    bounding = "-all," + ",".join(f"+{c.lower()}" for c in caps)
    # the DaemonSet's capabilities and its command (-OO: no docstrings, no asserts)
    agent = Started(["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all",
                     "--no-new-privs"], command=daemonset_command())
    err = ""
    try:
        agent.wait_serving()
        after = task_caps(agent.proc.pid)
        with Sandbox(Hierarchy.V1_CPU, name="rqs-caps") as sb:
            g = sb.group("late")  # created after the drop
            sb.spawn(g, code=PERIODIC.format(busy=0.0005, sleep=0.002))
            sb.spawn(g, code=PERIODIC.format(busy=0.0005, sleep=0.002))
            cid = os.stat(g.dirs[0]).st_ino
            rel = sb.base + "/late"
            deadline, got = time.monotonic() + 10, []
            while time.monotonic() < deadline and not got:
                time.sleep(0.5)
                got = samples_for(agent.scrape(), "runqscale_runqueue_latency_seconds_count",
                                  cgroup=rel)
            assert got and got[0].value > 0, "no series for a cgroup created after the drop"
            first = agent.scrape()
            time.sleep(1.2)
            second = agent.scrape()
            ev1 = one_value(first, "runqscale_agent_events_total")
            ev2 = one_value(second, "runqscale_agent_events_total")
            n1 = samples_for(first, "runqscale_runqueue_latency_seconds_count", cgroup=rel)
            n2 = samples_for(second, "runqscale_runqueue_latency_seconds_count", cgroup=rel)
            assert ev2 > ev1 and n2[0].value > n1[0].value, "samples stopped after the drop"
            # the cgroup's histogram is in a slot (cgroup_slot names it) or in the hash
            maps = [_map_id_of(agent.proc.pid, n) for n in ("cgroup_slot", "hists")]
            assert any(_in_map(m, cid) for m in maps)
            sb.remove(g)
            deadline, present = time.monotonic() + 10, True
            while time.monotonic() < deadline and present:
                time.sleep(0.3)
                present = any(_in_map(m, cid) for m in maps)
            assert not present, "the removed cgroup's map entries were not deleted (bpf delete)"
            deadline, series = time.monotonic() + 10, True
            while time.monotonic() < deadline and series:
                time.sleep(0.3)
                series = bool(samples_for(agent.scrape(),
                                          "runqscale_runqueue_latency_seconds_count", cgroup=rel))
            assert not series, "series of the removed cgroup outlived the window"
            # Past the slot quarantine the agent zeroes the freed slot and pushes it back onto
            # the BPF stack: map updates through its fds, without capabilities.
            time.sleep(core.SLOT_QUARANTINE_S + 1.5)
            assert one_value(agent.scrape(), "runqscale_agent_sample_errors_total") == 0
        assert agent.proc.poll() is None
    finally:
        err = agent.stop()
    line = next(ln for ln in err.splitlines() if "capabilities after attach" in ln)
    # What the agent held before the drop, as it reported it: the DaemonSet's list (less any
    # the machine's own bounding set lacks: this VM's root has no SYS_RESOURCE).
    dropped = line.split("dropped ", 1)[1].split(";", 1)[0].upper().split(",")
    assert {"BPF", "PERFMON"} <= set(dropped) <= set(caps), line
    kept = privdrop.CAP_BPF if "CAP_BPF kept" in line else 0
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 5):
        assert kept == 0, line  # this kernel reads and deletes map entries without CAP_BPF
    assert len(after) >= 3, "expected the sampler, HTTP and cgroup-watch threads"
    for tid, f in after.items():
        assert f["CapEff"] == kept and f["CapPrm"] == kept, (tid, f)
        assert f["CapInh"] == 0 and f["CapAmb"] == 0 and f["NoNewPrivs"] == 1, (tid, f)
    print(f"\nprivileges: DaemonSet adds {','.join(caps)}; held before the drop: "
          f"{','.join(dropped).lower()}; after attach, "
          f"{len(after)} threads: CapEff {after[agent.proc.pid]['CapEff']:#x} CapPrm "
          f"{after[agent.proc.pid]['CapPrm']:#x} CapBnd {after[agent.proc.pid]['CapBnd']:#x} "
          f"({privdrop.names(after[agent.proc.pid]['CapBnd'])}) NoNewPrivs 1; agent said: "
          f"{line.split(': ', 1)[1]}")


def test_as_plain_root_the_bounding_set_is_emptied_too() -> None:
    require_root()
    before = task_caps(os.getpid())[os.getpid()]  # what the agent inherits
    agent = Started([])
    try:
        agent.wait_serving()
        after = task_caps(agent.proc.pid)
        assert agent.proc.poll() is None
        text = agent.metrics()
        assert "runqscale_agent_events_total" in text
    finally:
        err = agent.stop()
    assert before["CapEff"] >> privdrop.CAP_SYS_ADMIN & 1
    for tid, f in after.items():
        assert f["CapEff"] == 0 and f["CapPrm"] == 0 and f["CapBnd"] == 0, (tid, f)
        assert f["NoNewPrivs"] == 1, (tid, f)
    # BPF run-time stats were switched on while SYS_ADMIN was held; the held fd keeps them on.
    assert "BPF run-time stats not enabled" not in err
    print(f"\nprivileges (root): CapEff {before['CapEff']:#x} -> 0 on {len(after)} threads, "
          "bounding set -> 0, NoNewPrivs 1")


def test_drop_keeps_cap_bpf_when_the_kernel_refuses_map_access_without_it() -> None:
    """The fallback path, on a real thread: a check that reports a refusal keeps CAP_BPF (and
    nothing else); run in a child process so the test runner keeps its own capabilities."""
    require_root()
    code = (
        "import os\n"
        "from runqscale.agent import privdrop as p\n"
        "calls = []\n"
        "def check():\n"
        "    eff = p.capget().effective\n"
        "    calls.append(eff)\n"
        "    return None if eff >> p.CAP_BPF & 1 else 'map reads'\n"
        "r = p.drop_after_attach([check])\n"
        "print(r.after.effective, r.after.permitted, p.bounding_set(), len(calls), r.denied)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    bpf = 1 << privdrop.CAP_BPF
    assert [int(x) for x in out[:4]] == [bpf, bpf, bpf, 2], out
    assert " ".join(out[4:]) == "map reads"
