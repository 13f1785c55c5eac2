"""LoadgenWatch.wait_start: the loops tick from the schedule's 0 that the generator announces;
a generator that dies first or never announces must not hang the benchmark."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from runqscale.validation.loop import LoadgenWatch


def _watch(code: str) -> LoadgenWatch:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return LoadgenWatch(proc, "/nonexistent")


def test_the_announced_start_on_the_monotonic_clock() -> None:
    w = _watch("import json, time; print(json.dumps({'start': time.time() + 0.3}), flush=True);"
               " time.sleep(1)")
    start = w.wait_start(timeout_s=10)
    # 0.3 s ahead when announced, less by however long the line took to be read
    assert -0.7 < start - time.monotonic() <= 0.35
    w.proc.kill()


def test_a_generator_that_ends_without_a_start_returns_at_once() -> None:
    w = _watch("import sys; sys.exit(3)")
    t = time.monotonic()
    assert w.wait_start(timeout_s=10) - t < 5
    assert w.proc.wait() == 3


def test_a_silent_generator_is_a_one_line_error_after_the_timeout() -> None:
    w = _watch("import time; time.sleep(5)")
    with pytest.raises(RuntimeError, match="announced no start in 0.3 s"):
        w.wait_start(timeout_s=0.3)
    w.proc.kill()
