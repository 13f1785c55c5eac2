"""The agent DaemonSet's capability set, shown on this kernel: the real agent runs as root with
only the capabilities deploy/base/agent-daemonset.yaml adds (bounding set = BPF, PERFMON,
SYS_RESOURCE; no_new_privs like allowPrivilegeEscalation: false) and serves run-queue series;
without BPF or PERFMON it stops with a one-line error naming the fix. SYS_RESOURCE is shown
unnecessary on kernels >= 5.11 (BPF memory is memcg-accounted) and kept for older ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from k8s_helpers import REPO, free_port

pytestmark = pytest.mark.kernel

RUNQSCALE = str(Path(sys.executable).parent / "runqscale")
DAEMONSET_CAPS = yaml.safe_load((REPO / "deploy/base/agent-daemonset.yaml").read_text())[
    "spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]


@pytest.fixture(autouse=True)
def _root_and_setpriv(root_required):
    if not shutil.which("setpriv"):
        pytest.skip("no setpriv (util-linux)")


def run_agent(caps: list[str], seconds: float = 20.0) -> tuple[int | None, str, str]:
    """Start the agent with `caps` as its whole bounding set; return (exit code or None if still
    serving, first /metrics text, stderr)."""
    port = free_port()
    bounding = "-all," + ",".join(f"+{c.lower()}" for c in caps)
    cmd = ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs",
           RUNQSCALE, "agent", "--listen", f"127.0.0.1:{port}", "--backend", "core",
           "--pods-source", "none", "--interval", "1s", "--window", "2s"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    text = ""
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and p.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
                if "runqscale_runqueue_latency_p95_seconds{" in text:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        code = p.poll()
    finally:
        if p.poll() is None:
            p.terminate()
        _, err = p.communicate(timeout=10)
    return code, text, err


def test_daemonset_capabilities_are_enough():
    code, text, err = run_agent(DAEMONSET_CAPS)
    assert code is None, f"agent exited {code} with only {DAEMONSET_CAPS}: {err[-500:]}"
    assert "runqscale_runqueue_latency_p95_seconds{" in text


@pytest.mark.parametrize("missing", ["BPF", "PERFMON"])
def test_without_a_needed_capability_the_agent_stops_with_the_fix(missing):
    caps = [c for c in DAEMONSET_CAPS if c != missing]
    code, text, err = run_agent(caps, seconds=15)
    assert code not in (None, 0), "the agent kept running without " + missing
    last = err.strip().splitlines()[-1]
    assert "CAP_BPF" in last and "cap_perfmon" in last, last


def test_sys_resource_is_only_for_old_kernels():
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) < (5, 11):
        pytest.skip("kernel < 5.11 charges BPF maps to RLIMIT_MEMLOCK: SYS_RESOURCE is needed")
    code, text, err = run_agent([c for c in DAEMONSET_CAPS if c != "SYS_RESOURCE"])
    assert code is None, err[-500:]
    assert "runqscale_runqueue_latency_p95_seconds{" in text
