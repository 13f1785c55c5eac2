"""glibc's heap thresholds for a long-running agent (the RSS it holds between scrapes).

glibc serves a request above `M_MMAP_THRESHOLD` with its own mmap and, when such a block is
freed, raises the threshold to that size and the trim threshold to twice that (its dynamic
thresholds). One multi-megabyte block freed while the agent starts raised the trim threshold
to ~8 MB, so a thread's heap kept up to 8 MB of free top for good: at 500 cgroups, the
scrape thread's arena held 7.86 MB free of 7.88 MB (`malloc_info`), and `malloc_trim` cannot
shrink a thread arena's top. Fixing both thresholds turns that off: blocks up to 4 MiB (the
agent's matrices are ~0.5 MB at 500 containers) come from the heap as they did once the
threshold had risen (holding the mmap threshold at 128 KiB instead cost a page fault per page
of every matrix, 0.3 % of a core), and a heap whose free top passes 512 KiB gives it back. That
trim has a price, measured at 500 cgroups: 150-180 minor page faults a second with a scrape
every 15 s, 570-600 with one every second, where a 2 MiB trim threshold took 22 and kept
1.7 MB more (at ~1 us a fault, under 0.06 % of a core).

One arena for every thread (`M_ARENA_MAX` 1). glibc gives each thread that allocates its own
arena (up to 8 per core): the sampler, the HTTP listener and each scrape's handler thread then
keep free memory in heaps of their own, which no other thread can reuse. Nearly every
allocation in the agent happens under the GIL, so threads seldom wait on the one arena's lock
(not measured apart; the agent's CPU did not change measurably). It is set before the agent
starts a thread: glibc never merges arenas already made, nor moves a thread off its arena, and
once it has made more than 8 it fixes its limit at 8 per core and ignores a later setting.

glibc reads MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_ARENA_MAX (or the same in
GLIBC_TUNABLES) at start; a user who sets either threshold keeps glibc's behaviour for both, one
who sets the arena limit keeps that. Not glibc (musl): nothing to do.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 4 << 20
TRIM_THRESHOLD_BYTES = 512 << 10
ARENAS = 1
ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")
ARENA_ENV, ARENA_TUNABLE = "MALLOC_ARENA_MAX", "glibc.malloc.arena_max"


def user_set(env: tuple[str, ...] = ENV, tunables: tuple[str, ...] = TUNABLES) -> bool:
    """Whether the user tuned any of these settings through glibc's environment (by name: a
    value glibc rejects counts as set, and glibc then keeps its default)."""
    given = {item.partition("=")[0] for item in os.environ.get("GLIBC_TUNABLES", "").split(":")}
    return any(k in os.environ for k in env) or any(t in given for t in tunables)


def _mallopt() -> Callable[[int, int], int] | None:
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def fix_heap_thresholds() -> bool:
    """Set both thresholds (once, at the agent's start); False when left alone or refused."""
    if user_set() or (mallopt := _mallopt()) is None:
        return False
    # mallopt returns 1 on success, 0 on a value it refuses (each is set on its own)
    mmap_ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    trim_ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return mmap_ok and trim_ok


def one_arena() -> bool:
    """Every thread allocates from the main arena (call before starting threads); False when
    the user set the limit or glibc refused."""
    if user_set((ARENA_ENV,), (ARENA_TUNABLE,)) or (mallopt := _mallopt()) is None:
        return False
    return mallopt(M_ARENA_MAX, ARENAS) == 1
