"""agent/malloc_tuning.py: the agent's heaps give their free top back to the node.

Each case runs in a fresh interpreter (glibc's thresholds are per process and fixed on first
use): one multi-megabyte block freed raises glibc's dynamic trim threshold, as the agent's
start-up did, and a thread then allocates and frees 6 MB in 200 KiB blocks, as a scrape does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
big = libc.malloc(6 << 20)
ctypes.memset(big, 1, 6 << 20)
libc.free(big)
def scrape():
    blocks = [libc.malloc(200 << 10) for _ in range(30)]
    for b in blocks:
        ctypes.memset(b, 1, 200 << 10)
    for b in reversed(blocks):
        libc.free(b)
t = threading.Thread(target=scrape)
t.start()
t.join()
print(libc.mallinfo2().fordblks)
"""


def _held_free_bytes(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True, env={**os.environ, **(env or {})}).stdout.split()
    return out[0], int(out[1])


@pytest.fixture(autouse=True)
def _glibc() -> None:
    if os.confstr("CS_GNU_LIBC_VERSION") is None:
        pytest.skip("glibc only (mallopt); musl keeps its own heap policy")


def test_freed_scrape_memory_goes_back_to_the_node_with_the_thresholds_fixed() -> None:
    set_, held = _held_free_bytes("fix")
    assert set_ == "True"
    assert held < 1 << 20, f"{held} bytes free but kept in the heaps"


def test_glibc_default_keeps_it_which_is_what_the_fix_is_for() -> None:
    # the control: without the fix the same work leaves the 6 MB free in the thread's heap
    _, held = _held_free_bytes("default")
    assert held >= 5 << 20


def test_a_users_malloc_env_setting_is_left_alone() -> None:
    # a user who wants a big heap kept (32 MB mmap and 128 MB trim thresholds) keeps it
    set_, held = _held_free_bytes("fix", {"MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                                          "MALLOC_TRIM_THRESHOLD_": str(128 << 20)})
    assert set_ == "False"
    assert held >= 5 << 20
