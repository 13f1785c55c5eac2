"""SIGTERM handled like Ctrl-C, for commands that own child processes and cgroups.

Python's default SIGTERM ends the process without running `finally` blocks, so a `kill` or a
CI job's timeout left `runqscale validate`'s replicas, nginx, load generator and sandbox
cgroups behind. With `terminate_as_interrupt()` the first SIGTERM raises `Terminated` (a
KeyboardInterrupt) in the main thread, and the cleanup Ctrl-C already runs does the rest; a
SIGTERM that comes while that cleanup runs (after either signal) is ignored, so it is not cut
short. A second Ctrl-C still interrupts it: that one is the user's choice.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from types import FrameType

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a process ended by SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
CHILD_GRACE_SECONDS = 120.0  # a child's cleanup: DeathStarBench stops 13 stores and 11 services

_stopping = False


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _stopping
    if _stopping:
        return
    _stopping = True
    raise Terminated()


def _on_int(signum: int, frame: FrameType | None) -> None:
    global _stopping
    _stopping = True
    raise KeyboardInterrupt()


def terminate_as_interrupt() -> None:
    """From now on SIGTERM unwinds the main thread as Ctrl-C does (main thread only)."""
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_int)


def exit_code(exc: BaseException | None) -> int:
    """143 for an exception caused by SIGTERM (directly or as click's Abort), else 130."""
    while exc is not None:
        if isinstance(exc, Terminated):
            return EXIT_TERMINATED
        exc = exc.__cause__
    return EXIT_INTERRUPTED


def call(cmd: Sequence[str], grace_s: float = CHILD_GRACE_SECONDS) -> int:
    """`subprocess.call`, except that when this process is interrupted or terminated the child
    gets SIGTERM and `grace_s` to clean up before SIGKILL (`subprocess.call` kills it at once,
    0.25 s after Ctrl-C, in the middle of its cleanup)."""
    child = subprocess.Popen(list(cmd))
    try:
        return child.wait()
    except KeyboardInterrupt:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        raise
