"""glibc's heap, held to what the agent uses.

glibc serves a block over the mmap threshold (128 KiB) with its own mapping and returns it on
free, but the first such free raises the threshold to that block's size: from then on the
agent's per-interval matrices (0.5 MB each at 500 containers) come from the heap, whose freed
pieces stay resident between their uses. Fixing the threshold keeps them mapped and returned:
at 500 containers 58.7 -> 49.7 MB RSS (measured with `python -m runqscale.agent.bench`'s
setup, 30 s of 1 s scrapes). The same as MALLOC_MMAP_THRESHOLD_=131072 in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, now held


def hold_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold; False where the C library is not glibc (musl has no
    mallopt and no moving threshold)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
