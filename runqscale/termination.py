"""SIGTERM handled like Ctrl-C, for commands that own child processes and cgroups.

Python's default SIGTERM ends the process without running `finally` blocks, so a `kill` or a
CI job's timeout left `runqscale validate`'s replicas, nginx, load generator and sandbox
cgroups behind. With `terminate_as_interrupt()` the first SIGTERM raises `Terminated` (a
KeyboardInterrupt) in the main thread, and the cleanup Ctrl-C already runs does the rest. Once
either signal has started that unwinding, further SIGTERMs are ignored so they do not cut it
short (a second Ctrl-C still does: that one is the user's choice). A first SIGTERM that lands
in a cleanup running for another reason (the end of a run, an error) still interrupts it.

The SIGINT handler is replaced only where Ctrl-C raises KeyboardInterrupt as usual (a process
started with SIGINT ignored keeps it ignored); inside `asyncio.run` Ctrl-C then arrives as a
KeyboardInterrupt in the event loop instead of a cancellation of the main task.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Sequence
from types import FrameType

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a process ended by SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
CHILD_GRACE_SECONDS = 120.0  # a child's cleanup: DeathStarBench stops 13 stores and 11 services

_stopping = False  # an interrupt is unwinding the main thread
_spawning = False  # `call` is starting a child (handlers run in the main thread, as `call`)
_deferred: int | None = None  # the first signal that came meanwhile


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM. (Uncaught, a subclass exits 1 with a traceback, not 143 as a
    plain KeyboardInterrupt's 130: the entry points catch it.)"""


def _interrupt(signum: int) -> None:
    global _stopping
    _stopping = True
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _deferred
    if signum == signal.SIGTERM and _stopping:
        return
    if _spawning:
        if _deferred is None:
            _deferred = signum  # raised once the child's handle exists (see `call`)
        return
    _interrupt(signum)


def terminate_as_interrupt() -> None:
    """From now on SIGTERM unwinds the main thread as Ctrl-C does. Main thread only; a signal
    the process inherited as ignored stays ignored."""
    global _stopping
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("terminate_as_interrupt() must be called from the main thread")
    _stopping = False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)


def exit_code(exc: BaseException | None) -> int:
    """143 for an exception caused by SIGTERM (directly or as click's Abort), else 130."""
    while exc is not None:
        if isinstance(exc, Terminated):
            return EXIT_TERMINATED
        exc = exc.__cause__
    return EXIT_INTERRUPTED


def stopped(exc: BaseException | None) -> tuple[int, str]:
    """(exit code, the word an entry point prints) for an interrupted command."""
    code = exit_code(exc)
    return code, "terminated" if code == EXIT_TERMINATED else "interrupted"


def call(cmd: Sequence[str], grace_s: float = CHILD_GRACE_SECONDS) -> int:
    """`subprocess.call`, except that when this process is interrupted or terminated the child
    gets SIGTERM and `grace_s` to clean up before SIGKILL (`subprocess.call` kills it at once,
    0.25 s after Ctrl-C, in the middle of its cleanup). A signal that arrives while the child
    is being spawned waits until its handle exists, so it is never orphaned."""
    global _spawning, _deferred
    _deferred = None
    _spawning = True
    try:
        child = subprocess.Popen(list(cmd))
    finally:
        _spawning = False
    try:
        if _deferred is not None:
            _interrupt(_deferred)
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
