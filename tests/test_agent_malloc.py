"""agent/malloc_tuning.py: the agent's heaps give their free top back to the node.

Each case runs in a fresh interpreter (glibc's thresholds are per process): one multi-megabyte
block freed raises glibc's dynamic trim threshold, as the agent's start-up did, and a thread
then allocates and frees 6 MB in 200 KiB blocks, as a scrape does. What the heaps keep free
is read as the change of `mallinfo2().fordblks` over that thread's work."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from runqscale.agent.malloc_tuning import ENV

SCRIPT = r"""
import ctypes, sys, threading
from runqscale.agent.malloc_tuning import fix_heap_thresholds
print(fix_heap_thresholds() if sys.argv[1] == "fix" else "-")
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks "
                                                "fsmblks uordblks fordblks keepcost").split()]
libc.mallinfo2.restype = MallInfo2
def mmapped_while_held(size):
    before = libc.mallinfo2().hblks
    b = libc.malloc(size)
    n = libc.mallinfo2().hblks - before
    libc.free(b)
    return n
big = libc.malloc(6 << 20)
ctypes.memset(big, 1, 6 << 20)
libc.free(big)
def scrape():
    blocks = [libc.malloc(200 << 10) for _ in range(30)]
    for b in blocks:
        ctypes.memset(b, 1, 200 << 10)
    for b in reversed(blocks):
        libc.free(b)
free_before = libc.mallinfo2().fordblks
t = threading.Thread(target=scrape)
t.start()
t.join()
print(libc.mallinfo2().fordblks - free_before, mmapped_while_held(1 << 20),
      mmapped_while_held(8 << 20))
"""


def _run(mode: str, env: dict[str, str] | None = None) -> tuple[str, int, int, int]:
    clean = {k: v for k, v in os.environ.items() if k not in ENV and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True, env={**clean, **(env or {})}).stdout.split()
    return out[0], int(out[1]), int(out[2]), int(out[3])


@pytest.fixture(autouse=True)
def _glibc() -> None:
    lib, version = platform.libc_ver()
    if lib != "glibc" or tuple(int(x) for x in version.split(".")[:2]) < (2, 33):
        pytest.skip(f"needs glibc >= 2.33 (mallinfo2), found {lib or 'another libc'} {version}")


def test_freed_scrape_memory_goes_back_to_the_node_with_the_thresholds_fixed() -> None:
    set_, kept, mmapped_1m, mmapped_8m = _run("fix")
    assert set_ == "True"
    assert kept < 1 << 20, f"{kept} bytes freed by the thread but kept in the heaps"
    # a matrix-sized block (1 MiB) comes from the heap, not its own mmap (no page faults
    # each interval); one past the fixed 4 MiB threshold is mapped: the threshold did not rise
    assert (mmapped_1m, mmapped_8m) == (0, 1)


def test_glibc_default_keeps_it_which_is_what_the_fix_is_for() -> None:
    # the control: without the fix the same work leaves the 6 MB free in the thread's heap
    _, kept, _, _ = _run("default")
    assert kept >= 5 << 20


@pytest.mark.parametrize("env", [
    {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)},
    {"GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={32 << 20}:"
                       f"glibc.malloc.trim_threshold={128 << 20}"},
])
def test_a_users_malloc_setting_is_left_alone(env: dict[str, str]) -> None:
    # a user who wants a big heap kept (32 MB mmap and 128 MB trim thresholds) keeps it
    set_, kept, mmapped_1m, mmapped_8m = _run("fix", env)
    assert set_ == "False"
    assert kept >= 5 << 20
    assert (mmapped_1m, mmapped_8m) == (0, 0)


ARENAS_SCRIPT = r"""
import ctypes, sys, threading
from runqscale.agent.malloc_tuning import one_arena
print(one_arena() if sys.argv[1] == "fix" else "-", flush=True)
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
all_in = threading.Barrier(4, timeout=30)
def work():
    b = libc.malloc(64 << 10)  # from the arena glibc gave this thread
    all_in.wait()  # all four hold a block at once: none can take another's freed arena
    libc.free(b)
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items()
             if k not in (*ENV, "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    p = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT, mode], capture_output=True,
                       text=True, check=True, env={**clean, **(env or {})}, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr  # a worker that raised (a broken barrier)
    return p.stdout.strip(), sum(line.startswith("Arena ") for line in p.stderr.splitlines())


def test_the_agents_threads_share_one_arena() -> None:
    assert _arenas("fix") == ("True", 1)


def test_glibc_default_gives_each_thread_an_arena_which_is_what_one_arena_is_for() -> None:
    _, arenas = _arenas("default")
    assert arenas >= 4  # the main thread's and the workers' (glibc allows 8 per core)


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "3"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.arena_max=3"}])
def test_a_users_arena_limit_is_left_alone(env: dict[str, str]) -> None:
    assert _arenas("fix", env) == ("False", 3)


def test_another_glibc_tunable_does_not_count_as_the_users_arena_limit() -> None:
    # a tunable named alike (arena_test) is not the limit: the agent still sets its own
    assert _arenas("fix", {"GLIBC_TUNABLES": "glibc.malloc.arena_test=2"}) == ("True", 1)
