"""The `core` backend: the CO-RE object probes/runqlat.bpf.o, loaded through libbpf."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from importlib import resources

import numpy as np

from runqscale.probes.errors import ProbeError
from runqscale.probes.libbpf import LibBpf, explain_load_failure
from runqscale.probes.maps import HistMap, enable_bpf_stats, program_run_stats
from runqscale.probes.model import (
    SLOTS,
    VALUE_WORDS,
    CgroupHistogram,
    Hierarchy,
    ProbeReading,
    ProbeStats,
    RowsReading,
)
from runqscale.probes.privileges import check_privileges

BTF_PATH = "/sys/kernel/btf/vmlinux"
STATS = ("map_full", "no_cgroup")  # enum rq_stat order
FAST_PATH = ("rq_switch", "rq_fork")
FALLBACK = ("rq_wakeup", "rq_wakeup_new", "rq_switch_stamped", "rq_fork")
SEED = "rq_seed"  # task iterator: task storage for the tasks alive at load (runqlat.bpf.c)
SCHED_INFO = "/proc/self/schedstat"  # present iff CONFIG_SCHED_INFO


def object_path() -> str:
    path = str(resources.files("runqscale.probes") / "runqlat.bpf.o")
    if not os.path.exists(path):
        raise ProbeError(f"{path} is missing: build it with `make bpf` (clang + bpftool)")
    return path


def check_preconditions() -> None:
    if not os.path.exists(BTF_PATH):
        raise ProbeError(
            f"{BTF_PATH} is missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF); "
            "use --backend bcc"
        )
    check_privileges()


class CoreProbe:
    """Loads and attaches the CO-RE program once; read() copies the per-cgroup histograms."""

    backend = "core"

    def __init__(self, hierarchy: Hierarchy, max_cgroups: int = 8192,
                 bpf_stats: bool = True) -> None:
        check_preconditions()
        self.hierarchy = hierarchy
        self.bpf = LibBpf()
        lib = self.bpf.lib
        self._links: list[int] = []
        self._stats_fd = -1
        self.obj = lib.bpf_object__open_file(object_path().encode(), None)
        if not self.obj:
            raise ProbeError(f"cannot open {object_path()}: {os.strerror(self.bpf.errno())}")
        try:
            self._configure(max_cgroups)
            if lib.bpf_object__load(self.obj) != 0:
                raise explain_load_failure(self.bpf.errno() or errno.EINVAL,
                                           self.bpf.last_message())
            self._hists_fd = lib.bpf_map__fd(self._maps["hists"])
            self._stats_map_fd = lib.bpf_map__fd(self._maps["stats"])
            self.capacity = lib.bpf_map__max_entries(self._maps["hists"])
            progs = [(p, n) for p, n in self.bpf.iter_programs(self.obj)
                     if n in (FAST_PATH if self.sched_info else FALLBACK)]
            self._prog_fds = [lib.bpf_program__fd(p) for p, _ in progs]
            for prog, name in progs:
                link = lib.bpf_program__attach(prog)
                if not link:
                    err = self.bpf.errno()
                    raise ProbeError(
                        f"attaching {name} failed ({os.strerror(err)}): the kernel needs "
                        "BTF-enabled tracepoints (tp_btf, Linux >= 5.5); try --backend bcc"
                    )
                self._links.append(link)
            self._seed_task_storage()
            if bpf_stats:
                # Held open, this fd keeps kernel.bpf_stats_enabled on for as long as we run.
                self._stats_fd = enable_bpf_stats()
        except BaseException:
            self.close()
            raise
        self._ncpu = lib.libbpf_num_possible_cpus()
        self._hists = HistMap(self._hists_fd, VALUE_WORDS, self._ncpu)  # a per-CPU hash
        self._forgotten_events = 0  # counts of histograms dropped by forget(), for events_total
        self._last_counts: dict[int, int] = {}
        self._prev_hists: dict[int, CgroupHistogram] = {}

    def _configure(self, max_cgroups: int) -> None:
        lib = self.bpf.lib
        self._maps = {}
        for m, name in self.bpf.iter_maps(self.obj):
            short = name.split(".")[-1] if name.startswith(("runqlat.", ".")) else name
            self._maps[short] = m
        missing = {"hists", "stats", "rodata"} - self._maps.keys()
        if missing:
            raise ProbeError(f"{object_path()} lacks maps {sorted(missing)}: rebuild with make bpf")
        size = ctypes.c_size_t()
        ro = lib.bpf_map__initial_value(self._maps["rodata"], ctypes.byref(size))
        if not ro or size.value < 8:
            raise ProbeError(f"{object_path()}: unexpected .rodata layout: rebuild with make bpf")
        hier = 0 if self.hierarchy is Hierarchy.V2 else 1
        # With CONFIG_SCHED_INFO one switch program reads the scheduler's own enqueue stamp;
        # otherwise three programs stamp wakeups in task-local storage.
        self.sched_info = os.path.exists(SCHED_INFO)
        ctypes.memmove(ro, struct.pack("<II", hier, int(self.sched_info)), 8)  # struct rq_config
        wanted = FAST_PATH if self.sched_info else FALLBACK
        for prog, name in self.bpf.iter_programs(self.obj):
            lib.bpf_program__set_autoload(prog, name in wanted or name == SEED)
        lib.bpf_map__set_max_entries(self._maps["hists"], max_cgroups)

    def _seed_task_storage(self) -> None:
        """Run the task iterator once, after rq_fork is attached (so no task is missed between
        the two): it creates the task storage of every task alive now, outside the scheduler."""
        lib = self.bpf.lib
        prog = next(p for p, n in self.bpf.iter_programs(self.obj) if n == SEED)
        link = lib.bpf_program__attach(prog)
        if not link:
            raise ProbeError(f"attaching the task iterator {SEED} failed "
                             f"({os.strerror(self.bpf.errno())}): the kernel needs BPF task "
                             "iterators (Linux >= 5.8); try --backend bcc")
        try:
            fd = lib.bpf_iter_create(lib.bpf_link__fd(link))
            if fd < 0:
                raise ProbeError(f"running the task iterator failed: {os.strerror(-fd)}")
            try:
                while os.read(fd, 4096):  # the program prints nothing: this just drives it
                    pass
            finally:
                os.close(fd)
        finally:
            lib.bpf_link__destroy(link)

    # -- reading -------------------------------------------------------------------------------

    def read(self) -> ProbeReading:
        """The map as one histogram object per cgroup (the CLI and the validation loop)."""
        r = self.read_rows()
        hists = CgroupHistogram.from_rows(r.keys, r.rows, self._prev_hists)
        self._prev_hists = hists
        return ProbeReading(r.monotonic_s, self.hierarchy, hists, r.stats)

    def read_rows(self) -> RowsReading:
        """The map as one matrix, no object per cgroup (the agent's interval)."""
        now = time.monotonic()
        keys, rows = self._hists.read_rows()
        counts = rows[:, :SLOTS].sum(axis=1, dtype=np.uint64).tolist()
        self._last_counts = dict(zip(keys, counts, strict=True))
        events = self._forgotten_events + sum(counts)
        return RowsReading(now, self.hierarchy, keys, rows, [True] * len(keys),
                           self._read_stats(len(keys), events))

    def _read_stats(self, entries: int, events: int) -> ProbeStats:
        lib = self.bpf.lib
        per_cpu = np.zeros(self._ncpu, dtype=np.uint64)
        totals = []
        for i in range(len(STATS)):
            k = ctypes.c_uint32(i)
            lib.bpf_map_lookup_elem(self._stats_map_fd, ctypes.byref(k), per_cpu.ctypes.data)
            totals.append(int(per_cpu.sum()))
        run_ns, run_cnt = program_run_stats(self._prog_fds)
        return ProbeStats(events, *totals, bpf_run_time_ns=run_ns, bpf_run_count=run_cnt,
                          map_entries=entries, map_capacity=self.capacity)

    def forget(self, cgroup_ids: list[int]) -> None:
        """Drop histograms of cgroups that no longer exist, so the map never fills with ghosts."""
        for cid in cgroup_ids:
            self._forgotten_events += self._last_counts.pop(cid, 0)
        self._hists.delete(cgroup_ids)

    def close(self) -> None:
        for link in self._links:
            self.bpf.lib.bpf_link__destroy(link)
        self._links = []
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
        if getattr(self, "obj", None):
            self.bpf.lib.bpf_object__close(self.obj)
            self.obj = None

    def __enter__(self) -> CoreProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
