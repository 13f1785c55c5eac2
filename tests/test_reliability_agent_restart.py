"""kill -9 of `runqscale agent` mid-run, restarted on the same port, with a real Prometheus
scraping it every second (issue 10).

After each SIGKILL the kernel frees everything the agent had loaded: its BPF programs, links and
maps (ids taken from the agent's own fds) are gone from `bpftool prog/link/map show`; the restarted
agent serves /metrics again, and the time from restart to the first valid scrape (the loaded
cgroup's p95 series present, events counted) is measured. Counters restart from zero with a new
`process_start_time_seconds`: Prometheus sees resets, never a negative increase.

RUNQSCALE_AGENT_KILLS (default 5) sets the number of kills; `pytest -s` prints a
`agent kill-9 figures:` line."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from agent_helpers import one_value, samples_for
from conftest import require_root
from prometheus_client.parser import text_string_to_metric_families
from prometheus_helpers import free_port

from runqscale.probes.model import Hierarchy
from runqscale.validation.sandbox import PERIODIC, Sandbox

pytestmark = [pytest.mark.kernel, pytest.mark.prometheus, pytest.mark.slow]

RUNQSCALE = str(Path(sys.executable).parent / "runqscale")
KILLS = int(os.environ.get("RUNQSCALE_AGENT_KILLS", "5"))


def bpf_ids(pid: int) -> dict[str, set[int]]:
    """prog/link/map ids held by the process's fds (from /proc/<pid>/fdinfo)."""
    out: dict[str, set[int]] = {"prog": set(), "link": set(), "map": set()}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, val = line.partition(":")
            if key in ("prog_id", "link_id", "map_id"):
                out[key[:-3]].add(int(val))
                break
    return out


def bpftool_ids(kind: str) -> set[int]:
    r = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True,
                       check=True)
    return {int(o["id"]) for o in json.loads(r.stdout or "[]")}


def probe_programs() -> tuple[int, int]:
    """(programs named like the probe's, tracing links) on the whole machine."""
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                      text=True, check=True).stdout or "[]")
    ours = {p["id"] for p in progs if str(p.get("name", "")).startswith(("rq_switch",
                                                                          "rq_wakeup"))}
    links = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout or "[]")
    return len(ours), sum(1 for link in links if link.get("prog_id") in ours)


def start(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [RUNQSCALE, "agent", "--listen", f"127.0.0.1:{port}", "--backend", "core",
         "--pods-source", "none", "--interval", "0.5s", "--window", "5s",
         "--node-name", "test-node"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out: dict = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, []).extend(fam.samples)
    return out


def first_valid_scrape(proc: subprocess.Popen, port: int, rel: str, timeout: float = 20) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited {proc.returncode}: {proc.stderr.read()}")
        try:
            s = scrape(port)
            if samples_for(s, "runqscale_runqueue_latency_p95_seconds", cgroup=rel) and \
                    one_value(s, "runqscale_agent_events_total") > 0:
                return s
        except (OSError, ValueError, AssertionError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no valid scrape {timeout}s after restart")


def wait_gone(ids: dict[str, set[int]], timeout: float = 10.0) -> float:
    """Seconds until none of the ids is listed by bpftool any more."""
    t0 = time.monotonic()
    while True:
        left = {k: v & bpftool_ids(k) for k, v in ids.items()}
        if not any(left.values()):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"leaked after kill -9 (still loaded {timeout}s later): {left}")
        time.sleep(0.1)


def test_kill9_and_restart_leaks_nothing_and_serves_again(prometheus) -> None:
    require_root()
    rng = random.Random(10)
    port = free_port()
    with Sandbox(Hierarchy.V1_CPU, name="rqs-restart") as sb:
        g = sb.group("svc")
        sb.spawn(g, code=PERIODIC.format(busy=0.0005, sleep=0.002))
        rel = sb.base + "/svc"
        progs0, links0 = probe_programs()
        prom = prometheus([f"127.0.0.1:{port}"])
        recoveries, freed, starts = [], [], []
        before_kill: list[float] = []
        after_restart: list[float] = []
        proc = None
        try:
            for i in range(KILLS + 1):
                t0 = time.monotonic()
                proc = start(port)
                s = first_valid_scrape(proc, port, rel)
                recoveries.append(time.monotonic() - t0)
                starts.append(one_value(s, "process_start_time_seconds"))
                after_restart.append(one_value(s, "runqscale_agent_events_total"))
                ids = bpf_ids(proc.pid)
                assert ids["prog"] and ids["link"] and ids["map"], ids
                time.sleep(rng.uniform(2.0, 4.0))  # mid-run: sampling, maybe mid-scrape
                if i == KILLS:
                    break
                before_kill.append(one_value(scrape(port), "runqscale_agent_events_total"))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                freed.append(wait_gone(ids))
            time.sleep(2.5)  # let Prometheus scrape the last incarnation a few times
            resets = prom.query(f'resets(runqscale_agent_events_total[{int(prom_span(starts))}s])')
            changes = prom.query('changes(process_start_time_seconds{job="runqscale-agent"}'
                                 f'[{int(prom_span(starts))}s])')
            increase = prom.query(
                f'increase(runqscale_runqueue_latency_seconds_count{{cgroup="{rel}"}}'
                f'[{int(prom_span(starts))}s])')
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        progs1, links1 = probe_programs()
    # Counters restart: a new process start time each time, and counts begin again near 0.
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False)), starts
    assert all(after < before for before, after in zip(before_kill, after_restart[1:], strict=True))
    n_resets = float(resets[0]["value"][1]) if resets else 0
    n_changes = float(changes[0]["value"][1]) if changes else 0
    inc = float(increase[0]["value"][1]) if increase else -1
    assert n_changes >= 1 and n_resets >= 1, (resets, changes)
    assert inc > 0, increase  # resets stitched: never negative, never lost
    print(f"\nagent kill-9 figures: {KILLS} SIGKILLs, 0 crashes on restart; BPF objects freed "
          f"after each kill (programs, links, maps by id) in {min(freed):.2f}-{max(freed):.2f} s; "
          f"probe programs/links on the machine before {progs0}/{links0}, after {progs1}/"
          f"{links1}; restart -> first valid scrape min/median/max "
          f"{min(recoveries):.3f}/{sorted(recoveries)[len(recoveries) // 2]:.3f}/"
          f"{max(recoveries):.3f} s; Prometheus: resets() {n_resets:.0f}, "
          f"changes(process_start_time_seconds) {n_changes:.0f}, increase over the run "
          f"{inc:.0f} waits (>0)")


def prom_span(starts: list[float]) -> float:
    return time.time() - starts[0] + 10 if starts else 60
