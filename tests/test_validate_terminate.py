"""`runqscale validate` stopped by SIGTERM (a `kill`, a CI job's timeout) cleans up as Ctrl-C
does: no replica, nginx or load generator left running, no sandbox cgroup left behind, exit 143.
Before, Python's default SIGTERM ended the process without its `finally` blocks and left all of
them (found in stop 46, when a killed benchmark's replicas kept running beside the next one)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_root
from k8s_helpers import REPO
from proc_helpers import alive, cmdline

from runqscale.data import WC98_DAY25 as TRACE

pytestmark = [pytest.mark.kernel, pytest.mark.services]


def _sandbox_dirs(pid: int) -> list[str]:
    """The sandbox's cgroup directories of process `pid`, in every hierarchy."""
    name = f"runqscale-validate-{pid}"
    return sorted(set(glob.glob(f"/sys/fs/cgroup/*/{name}") + glob.glob(f"/sys/fs/cgroup/{name}")))


def _procs_under(dirs: list[str]) -> set[int]:
    pids: set[int] = set()
    for d in dirs:
        for f in glob.glob(f"{d}/**/cgroup.procs", recursive=True):
            try:
                pids |= {int(x) for x in Path(f).read_text().split()}
            except OSError:
                pass
    return pids


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_stopped_comparison_leaves_no_process_or_cgroup(tmp_path, sig, code, word) -> None:
    require_root()
    assert os.path.exists("/usr/sbin/nginx"), "no nginx: make deps installs it"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runqscale.cli", "validate", "--trace", str(TRACE),
         "--policies", "static", "--duration", "60s", "--capacity", "20",
         "--max-foreign-cpu", "64", "--max-steal", "1", "--out", str(tmp_path / "o")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # Ctrl-C enabled, as in a terminal: CI's background jobs inherit SIGINT ignored, and
        # the command rightly keeps an ignored SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # wait until the run is under way: replicas, nginx and the generator all started
        deadline = time.monotonic() + 90
        started: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            started = _procs_under(_sandbox_dirs(proc.pid))
            cmds = " ".join(cmdline(p) for p in started)
            if "validation.loadgen" in cmds and "nginx" in cmds and "runlang_service" in cmds:
                break
            time.sleep(0.2)
        else:
            proc.kill()
            _, err = proc.communicate(timeout=60)
            pytest.fail(f"the run did not start (rc {proc.returncode}): {err[-2000:]}")
        time.sleep(2)  # into the run, with requests in flight
        started |= _procs_under(_sandbox_dirs(proc.pid))
        proc.send_signal(sig)  # to the command only, not its process group, as `kill PID` does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err[-2000:]
    assert err.strip().splitlines()[-1] == f"runqscale: {word}", err[-2000:]
    time.sleep(0.5)  # what the command did not wait for (nginx's workers) is gone by now
    left = {p: cmdline(p) for p in started if alive(p)}
    assert not left, f"still running after the command exited: {left}"
    assert _sandbox_dirs(proc.pid) == [], "the sandbox's cgroups were left behind"
