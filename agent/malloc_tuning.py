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

glibc reads MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (or the same two in GLIBC_TUNABLES)
at start; a user who sets either keeps glibc's behaviour with that setting. Not glibc (musl):
nothing to do.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 4 << 20
TRIM_THRESHOLD_BYTES = 512 << 10
ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def user_set() -> bool:
    """Whether the user tuned either threshold through glibc's environment."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(k in os.environ for k in ENV) or any(t in tunables for t in TUNABLES)


def fix_heap_thresholds() -> bool:
    """Set both thresholds (once, at the agent's start); False when left alone or refused."""
    if user_set():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on a value it refuses (each is set on its own)
    mmap_ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    trim_ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return mmap_ok and trim_ok
