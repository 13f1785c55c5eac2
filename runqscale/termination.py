"""SIGTERM handled like Ctrl-C, for commands that own child processes and cgroups.

Python's default SIGTERM ends the process without running `finally` blocks, so a `kill` or a
CI job's timeout left `runqscale validate`'s replicas, nginx, load generator and sandbox
cgroups behind. With `terminate_as_interrupt()` the first SIGTERM raises `Terminated` (a
KeyboardInterrupt) in the main thread, and the cleanup Ctrl-C already runs does the rest.
"""

from __future__ import annotations

import signal
from types import FrameType

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a process ended by SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    # Later SIGTERMs must not cut the cleanup short; SIGKILL still ends it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def terminate_as_interrupt() -> None:
    """From now on SIGTERM unwinds the main thread as Ctrl-C does (main thread only)."""
    signal.signal(signal.SIGTERM, _on_term)


def exit_code(exc: BaseException) -> int:
    """143 for an exception caused by SIGTERM (directly or as click's Abort), else 130."""
    while exc is not None:
        if isinstance(exc, Terminated):
            return EXIT_TERMINATED
        exc = exc.__cause__  # type: ignore[assignment]
    return EXIT_INTERRUPTED
