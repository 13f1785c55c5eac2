"""The agent benchmark's RSS figures: the import floor under the agent before it reads any
cgroup, and the part of the RSS that is the probe's mapped slot array."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import tempfile

import pytest
from conftest import require_root

from runqscale.agent.bench import (
    IMPORT_STAGES,
    _bpf_map_rss,
    evict_page_cache,
    import_floor,
    interpreter_dirs,
)
from runqscale.probes.core import CoreProbe
from runqscale.probes.model import Hierarchy


def test_the_import_floor_reports_every_stage_in_order_and_cumulatively() -> None:
    floor = import_floor()
    assert [s["stage"] for s in floor] == [name for name, _ in IMPORT_STAGES]
    for s in floor:
        assert s["VmRSS"] >= s["RssAnon"] + s["RssFile"] > 0
    rss = [s["VmRSS"] for s in floor]
    # each stage adds modules and unloads none (glibc may give back a little freed heap)
    assert all(b > a - (1 << 20) for a, b in zip(rss, rss[1:], strict=False))
    numpy = [name for name, _ in IMPORT_STAGES].index("numpy")
    assert rss[numpy] - rss[numpy - 1] > 10 << 20  # numpy alone is more than 10 MB


@pytest.mark.kernel
def test_the_bench_tells_the_mapped_slot_array_apart_in_the_rss() -> None:
    """The probe's slot array, mapped into the process, is counted as BPF map RSS (whole: the
    kernel maps every page at once), and nothing is before the probe maps it."""
    require_root()
    before = _bpf_map_rss(os.getpid())
    probe = CoreProbe(Hierarchy.V1_CPU)
    try:
        mapped = _bpf_map_rss(os.getpid())
        size = len(probe._slot_hists._mm)  # type: ignore[union-attr]
    finally:
        probe.close()
    assert before == 0
    assert mapped == size > 0
    assert _bpf_map_rss(os.getpid()) == 0, "the mapping outlived close()"


def _resident_pages(path: str) -> int:
    """Pages of the file in the page cache (mincore on a mapping that touches none)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    size = os.path.getsize(path)
    pages = -(-size // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) == 0
        finally:
            libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec)


def test_evicting_a_tree_drops_its_files_from_the_page_cache() -> None:
    """The bench's RSS figures start from libraries read back from disk, not from pages a
    recent install left in the cache: every regular file under the tree is evicted, and the
    tree sits where the venv does (a tmpfs /tmp keeps its pages: nothing to evict there)."""
    with tempfile.TemporaryDirectory(dir=sys.prefix) as top:
        lib = os.path.join(top, "site-packages", "pkg")
        os.makedirs(lib)
        files = [os.path.join(lib, f"mod{i}.so") for i in range(3)]
        for path in files:
            with open(path, "wb") as f:
                f.write(os.urandom(256 << 10))  # written: every page is in the cache
                f.flush()
                os.fsync(f.fileno())  # written back: clean pages, which advice can drop
        os.symlink(files[0], os.path.join(lib, "link.so"))  # links are not followed
        os.mkfifo(os.path.join(lib, "fifo"))  # opening a FIFO would block: skipped
        pages = (256 << 10) // mmap.PAGESIZE
        assert [_resident_pages(p) for p in files] == [pages] * 3
        assert evict_page_cache([top]) == 3
        assert [_resident_pages(p) for p in files] == [0, 0, 0]


def test_the_interpreter_dirs_do_not_nest() -> None:
    """A venv's platstdlib holds its site-packages: each file is walked once."""
    dirs = interpreter_dirs()
    assert dirs and all(os.path.isdir(d) for d in dirs)
    assert not any(d.startswith(o + os.sep) for d in dirs for o in dirs)
