"""Reading what a loaded probe left in the kernel, shared by both backends: the per-cgroup
histogram map (any map fd, whoever created it; per-CPU values summed here) and the programs'
bpf_stats run time."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys

import numpy as np

from runqscale.probes.libbpf import BPF_STATS_RUN_TIME, LibBpf

BATCH = 256
BATCH_BYTES = 4 << 20  # cap on the batch buffer: per-CPU values grow with the CPU count


class HistMap:
    """A hash map of u64 key -> `words` u64 values, or a per-CPU hash (ncpu > 1: one value per
    possible CPU, summed here), read with batch lookups (one syscall per batch of entries),
    falling back to key iteration on kernels without batch operations."""

    def __init__(self, fd: int, words: int, ncpu: int = 1) -> None:
        self.fd, self.words, self.ncpu = fd, words, max(1, ncpu)
        self._lib = LibBpf.load()
        self.batch = max(16, min(BATCH, BATCH_BYTES // (self.ncpu * words * 8)))
        self._keys = np.zeros(self.batch, dtype=np.uint64)
        self._vals = np.zeros((self.batch, self.ncpu, words), dtype=np.uint64)
        self._batch_ok = True

    def read(self) -> dict[int, np.ndarray]:
        keys, rows = self.read_rows()
        return dict(zip(keys, rows, strict=True))

    def read_rows(self) -> tuple[list[int], np.ndarray]:
        """Every entry: its keys, and a fresh (entries, words) matrix of the values summed over
        CPUs (one array for the whole map, nothing allocated per entry)."""
        out = self._read_batch() if self._batch_ok else None
        if out is None:
            self._batch_ok = False
            out = self._read_iter()
        keys, parts = out
        rows = np.concatenate(parts) if parts else np.zeros((0, self.words), dtype=np.uint64)
        return keys, rows

    def _read_batch(self) -> tuple[list[int], list[np.ndarray]] | None:
        lib, keys, parts = self._lib, [], []
        in_tok, out_tok = ctypes.c_uint32(0), ctypes.c_uint32(0)  # htab batch token: a bucket
        first = True
        while True:
            count = ctypes.c_uint32(self.batch)
            rc = lib.bpf_map_lookup_batch(
                self.fd, None if first else ctypes.byref(in_tok), ctypes.byref(out_tok),
                self._keys.ctypes.data, self._vals.ctypes.data, ctypes.byref(count), None)
            err = ctypes.get_errno() if rc else 0
            if rc and err != errno.ENOENT:
                return None  # no batch ops here (or a bucket larger than a batch): iterate
            n = count.value
            if n:
                parts.append(self._vals[:n].sum(axis=1, dtype=np.uint64))  # fresh per batch
                keys.extend(self._keys[:n].tolist())
            if rc:  # ENOENT: that was the last batch
                return keys, parts
            in_tok.value, first = out_tok.value, False

    def _read_iter(self) -> tuple[list[int], list[np.ndarray]]:
        lib, keys, rows = self._lib, [], []
        key, nxt = ctypes.c_uint64(), ctypes.c_uint64()
        val = np.zeros((self.ncpu, self.words), dtype=np.uint64)
        prev = None
        while lib.bpf_map_get_next_key(self.fd, prev, ctypes.byref(nxt)) == 0:
            key.value = nxt.value
            prev = ctypes.byref(key)
            if lib.bpf_map_lookup_elem(self.fd, prev, val.ctypes.data) == 0:
                keys.append(key.value)
                rows.append(val.sum(axis=0, dtype=np.uint64))
        return keys, ([np.stack(rows)] if rows else [])

    def delete(self, keys: list[int]) -> None:
        key = ctypes.c_uint64()
        for k in keys:
            key.value = k
            self._lib.bpf_map_delete_elem(self.fd, ctypes.byref(key))


def possible_cpu_ids(path: str = "/sys/devices/system/cpu/possible") -> int:
    """The highest possible CPU id + 1: what bpf_get_smp_processor_id() stays under. Not the
    number of possible CPUs (libbpf's count), which is smaller when the set has gaps."""
    with open(path) as f:
        last = f.read().strip().split(",")[-1]
    return int(last.split("-")[-1]) + 1


class MappedSlots:
    """The slotted histograms as the product's object lays them out: one mmapable array of
    `cpu_ids` x `stride` entries of `words` u64 values, CPU-major (entry cpu * stride + slot),
    read in place through a shared mapping: no syscall and no kernel copy per read, where the
    per-CPU array's batch lookup copied every CPU's values out (0.56 ms of the agent's ~2.3 ms
    interval at 500 cgroups on 2 CPUs). Aligned 8-byte counters are read whole (x86-64, arm64),
    so a counter the BPF side is adding to reads as before or after the add."""

    def __init__(self, fd: int, words: int, cpu_ids: int, stride: int) -> None:
        self.words, self.cpu_ids, self.stride = words, max(1, cpu_ids), stride
        count = self.cpu_ids * stride * words
        length = -(-count * 8 // mmap.PAGESIZE) * mmap.PAGESIZE  # the kernel maps whole pages
        self._mm = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = np.frombuffer(self._mm, dtype=np.uint64, count=count).reshape(
            self.cpu_ids, stride, words)

    def read(self, slots: np.ndarray) -> np.ndarray:
        """(len(slots), words): each slot's values summed over CPUs, from one contiguous pass
        per CPU over the range the slots span (the BPF side hands out low slots first, so that
        range stays about as long as the number of slots in use)."""
        if self._mm.closed:
            raise ValueError("histogram slots read after the probe was closed")
        if not len(slots):
            return np.zeros((0, self.words), dtype=np.uint64)
        end = int(slots.max()) + 1
        span = self._view[0, :end].copy()
        for cpu in range(1, self.cpu_ids):
            np.add(span, self._view[cpu, :end], out=span)
        return span[slots]  # a fresh array (fancy indexing copies)

    def zero(self, slot: int) -> None:
        self._view[:, slot] = 0

    def close(self) -> None:
        """Unmap; reads after it raise ValueError (the mapping is gone), never touch memory."""
        self._view = np.zeros((self.cpu_ids, 0, self.words), dtype=np.uint64)  # drop the export
        self._mm.close()


class SlotArray:
    """A per-CPU array of `words` u64 values per slot (the slotted histograms of objects built
    before MappedSlots, which the *_at_rev benchmarks still load), read for a given set of
    slots: batch lookups over the range they span."""

    def __init__(self, fd: int, words: int, ncpu: int) -> None:
        self.fd, self.words, self.ncpu = fd, words, max(1, ncpu)
        self._lib = LibBpf.load()
        self.batch = max(1, min(BATCH, BATCH_BYTES // (self.ncpu * words * 8)))
        self._keys = np.zeros(self.batch, dtype=np.uint32)
        self._vals = np.zeros((self.batch, self.ncpu, words), dtype=np.uint64)

    def read(self, slots: np.ndarray) -> np.ndarray:
        """(len(slots), words): each slot's values summed over CPUs."""
        if not len(slots):
            return np.zeros((0, self.words), dtype=np.uint64)
        end = int(slots.max()) + 1
        span = np.zeros((end, self.words), dtype=np.uint64)
        start = 0
        while start < end:
            n = min(self.batch, end - start)
            self._read_range(start, n, span[start:start + n])
            start += n
        return span[slots]  # a fresh array (fancy indexing copies)

    def _read_range(self, start: int, n: int, into: np.ndarray) -> None:
        lib = self._lib
        # the batch token is the key read last (the kernel resumes at its next key)
        in_tok, out_tok = ctypes.c_uint32(max(0, start - 1)), ctypes.c_uint32(0)
        count = ctypes.c_uint32(n)
        rc = lib.bpf_map_lookup_batch(self.fd, ctypes.byref(in_tok) if start else None,
                                      ctypes.byref(out_tok), self._keys.ctypes.data,
                                      self._vals.ctypes.data, ctypes.byref(count), None)
        if rc == 0 or ctypes.get_errno() == errno.ENOENT:
            into[:count.value] = self._vals[:count.value].sum(axis=1, dtype=np.uint64)
            return
        key = ctypes.c_uint32()  # no batch ops on this kernel: one lookup per slot
        val = np.zeros((self.ncpu, self.words), dtype=np.uint64)
        for i in range(n):
            key.value = start + i
            if lib.bpf_map_lookup_elem(self.fd, ctypes.byref(key), val.ctypes.data) == 0:
                into[i] = val.sum(axis=0, dtype=np.uint64)

    def zero(self, slot: int) -> None:
        key = ctypes.c_uint32(slot)
        zeros = np.zeros((self.ncpu, self.words), dtype=np.uint64)
        if self._lib.bpf_map_update_elem(self.fd, ctypes.byref(key), zeros.ctypes.data, 0):
            raise OSError(ctypes.get_errno(), f"zeroing histogram slot {slot} failed")


def push_free_slots(fd: int, slots: list[int]) -> None:
    """Hand slots to the BPF side's free stack (popped in the reverse order)."""
    lib, v = LibBpf.load(), ctypes.c_uint32()
    for s in slots:
        v.value = s
        if lib.bpf_map_update_elem(fd, None, ctypes.byref(v), 0):
            raise OSError(ctypes.get_errno(), f"pushing free histogram slot {s} failed")


def enable_bpf_stats() -> int:
    """Turn on the kernel's per-program run-time accounting for as long as the returned fd is
    open; it costs two clock reads per program run, system-wide. The kernel wants
    CAP_SYS_ADMIN for this, which the DaemonSet does not grant: then -1 is returned, one warning
    is printed, and run time is only counted where the node sets kernel.bpf_stats_enabled=1."""
    fd = int(LibBpf.load().bpf_enable_stats(BPF_STATS_RUN_TIME))
    if fd < 0:
        sys.stderr.write(
            "runqscale: warning: BPF run-time stats not enabled (needs CAP_SYS_ADMIN); "
            "runqscale_agent_bpf_run_seconds_total stays 0 unless the node sets "
            "sysctl kernel.bpf_stats_enabled=1\n")
    return fd


def program_run_stats(prog_fds: list[int]) -> tuple[int, int]:
    """Summed (run_time_ns, run_cnt) of these programs, from /proc/self/fdinfo (read as bytes
    in one read(): the agent does this every interval)."""
    run_ns = run_cnt = 0
    for fd in prog_fds:
        try:
            f = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                text = os.read(f, 8192)
            finally:
                os.close(f)
            for line in text.splitlines():
                k, _, v = line.partition(b":")
                if k == b"run_time_ns":
                    run_ns += int(v)
                elif k == b"run_cnt":
                    run_cnt += int(v)
        except (OSError, ValueError):
            continue
    return run_ns, run_cnt
