"""SIGTERM as Ctrl-C (runqscale/termination.py): a stopped command runs its cleanup, a stopped
sweep gives its child run time to run its own, and a SIGTERM during a cleanup does not cut it
short. Real processes and real signals; no root needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import click
import pytest

from runqscale import termination

# A command that owns something: it says `ready`, works, and on the way out takes `cleanup_s`
# to release what it holds, then writes `done` into its file.
CHILD = textwrap.dedent("""
    import sys, time
    from runqscale import termination
    termination.terminate_as_interrupt()
    mark, cleanup_s = sys.argv[1], float(sys.argv[2])
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        time.sleep(cleanup_s)
        open(mark, "w").write("done")
""")

# A sweep that runs the command as its child (what `python -m runqscale.validation.bench` does).
PARENT = textwrap.dedent("""
    import sys
    from runqscale import termination
    termination.terminate_as_interrupt()
    try:
        termination.call([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
    except KeyboardInterrupt as e:
        sys.exit(termination.exit_code(e))
""")


def _start(code: str, *args: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _child_pids(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_command_stopped_by_a_signal_runs_its_cleanup(tmp_path, sig) -> None:
    mark = tmp_path / "mark"
    p = _start(CHILD, str(mark), "0.3")
    p.send_signal(sig)
    p.wait(timeout=30)
    assert mark.read_text() == "done"
    assert p.returncode != 0  # the CLIs map the interrupt to 143 / 130 (tests below)


def test_exit_codes_follow_the_signal_through_click_s_abort() -> None:
    assert termination.exit_code(termination.Terminated()) == 143
    assert termination.exit_code(KeyboardInterrupt()) == 130
    abort = click.exceptions.Abort()
    abort.__cause__ = termination.Terminated()
    assert termination.exit_code(abort) == 143
    assert termination.exit_code(click.exceptions.Abort()) == 130


def test_a_sigterm_during_the_cleanup_does_not_cut_it_short(tmp_path) -> None:
    mark = tmp_path / "mark"
    p = _start(CHILD, str(mark), "1.0")
    p.send_signal(signal.SIGINT)  # Ctrl-C: the cleanup starts (1 s)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)  # then a supervisor's SIGTERM
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert mark.read_text() == "done"


def test_a_stopped_sweep_lets_its_child_clean_up(tmp_path) -> None:
    """`subprocess.call` would leave the child running on SIGTERM (the sweep dies alone) and
    SIGKILL it 0.25 s into its cleanup on Ctrl-C."""
    mark = tmp_path / "mark"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(mark), "1.0"],
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "ready"  # the child's line, inherited stdout
    children = _child_pids(parent.pid)
    assert len(children) == 1
    parent.send_signal(signal.SIGTERM)  # to the sweep alone, as `kill PID` does
    parent.wait(timeout=60)
    assert parent.returncode == 143
    assert mark.read_text() == "done"
    assert not _alive(children[0])


def test_click_commands_report_sigterm_as_terminated_exit_143() -> None:
    @click.command()
    def cmd() -> None:
        termination.terminate_as_interrupt()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    group = click.Group("g", commands={"cmd": cmd})
    from runqscale.cli import run_one_line

    saved = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    try:
        with pytest.raises(SystemExit) as e:
            sys.argv = ["g", "cmd"]
            run_one_line(group, "g")
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])
        termination._stopping = False
    assert e.value.code == 143
