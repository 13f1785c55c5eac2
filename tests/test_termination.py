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
from proc_helpers import alive

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


def _child_pids(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids]


def test_a_command_stopped_by_sigterm_runs_its_cleanup(tmp_path) -> None:
    """Python's default SIGTERM would end it without its `finally` (no mark)."""
    mark = tmp_path / "mark"
    p = _start(CHILD, str(mark), "0.3")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert mark.read_text() == "done"


def test_an_ignored_sigint_stays_ignored(tmp_path) -> None:
    """A job started with SIGINT ignored (`trap '' INT`, background jobs of a script) must not
    become interruptible, nor pass an interruptible SIGINT on to its children."""
    code = ("import signal; from runqscale import termination; "
            "termination.terminate_as_interrupt(); "
            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "
            "signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)")
    r = subprocess.run(["sh", "-c", f"trap '' INT; exec {sys.executable} -c \"{code}\""],
                       capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["True", "True"], r.stderr


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
    assert not alive(children[0])


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path) -> None:
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")
    parent_code = textwrap.dedent("""
        import sys
        from runqscale import termination
        termination.terminate_as_interrupt()
        try:
            termination.call([sys.executable, "-c", sys.argv[1]], grace_s=0.5)
        except KeyboardInterrupt as e:
            sys.exit(termination.exit_code(e))
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code, stubborn],
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "ready"
    child = _child_pids(parent.pid)[0]
    t0 = time.monotonic()
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=30)
    assert parent.returncode == 143 and time.monotonic() - t0 < 10
    assert not alive(child)


def test_a_signal_while_the_child_is_spawned_is_raised_once_it_can_be_stopped(
        monkeypatch) -> None:
    """The signal lands inside Popen (here: sent from it); `call` must still stop the child it
    started instead of leaving it to run its whole benchmark."""
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen_hit_by_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # handled inside Popen: deferred
        p = real_popen(*args, **kwargs)
        started.append(p)
        return p

    saved = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    monkeypatch.setattr(subprocess, "Popen", popen_hit_by_sigterm)
    try:
        termination.terminate_as_interrupt()
        with pytest.raises(termination.Terminated):
            termination.call([sys.executable, "-c", "import time; time.sleep(60)"], grace_s=10)
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])
    assert len(started) == 1 and started[0].returncode == -signal.SIGTERM


def test_click_commands_report_sigterm_as_terminated_exit_143(monkeypatch) -> None:
    @click.command()
    def cmd() -> None:
        termination.terminate_as_interrupt()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    group = click.Group("g", commands={"cmd": cmd})
    from runqscale.cli import run_one_line

    saved = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    monkeypatch.setattr(sys, "argv", ["g", "cmd"])
    try:
        with pytest.raises(SystemExit) as e:
            run_one_line(group, "g")
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])
    assert e.value.code == 143
