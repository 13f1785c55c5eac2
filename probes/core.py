"""The `core` backend: the CO-RE object probes/runqlat.bpf.o, loaded through libbpf."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time

import numpy as np

from runqscale.probes.errors import ProbeError
from runqscale.probes.libbpf import LibBpf, explain_load_failure
from runqscale.probes.maps import (
    HistMap,
    MappedSlots,
    SlotArray,
    enable_bpf_stats,
    possible_cpu_ids,
    program_run_stats,
    push_free_slots,
)
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
STATS = ("map_full", "no_cgroup")  # enum rq_stat order: the ones ProbeStats reports
RQ_STAT_SLOTTED = 2  # cgroups given a slot; objects built before it have only STATS
BPF_MAP_TYPE_ARRAY = 2  # slot_hists as one mmapable array (a per-CPU array before it)
FAST_PATH = ("rq_switch", "rq_fork")
FALLBACK = ("rq_wakeup", "rq_wakeup_new", "rq_switch_stamped", "rq_fork")
SEED = "rq_seed"  # task iterator: task storage for the tasks alive at load (runqlat.bpf.c)
SCHED_INFO = "/proc/self/schedstat"  # present iff CONFIG_SCHED_INFO
# The slotted histograms are preallocated for every possible CPU: at most this much kernel
# memory, between these slot counts; cgroups beyond them use the hash (one lookup per wait).
SLOT_BUDGET_BYTES = 8 << 20
MIN_SLOTS, MAX_SLOTS = 128, 1024
# A dead cgroup's slot is zeroed and handed out again only this long after it was forgotten:
# a task still exiting in it (or a CPU mid-update) cannot write into its next owner.
SLOT_QUARANTINE_S = 10.0


def slot_count(ncpu: int, max_cgroups: int) -> int:
    """How many of `max_cgroups` get a slotted histogram on a machine with `ncpu` possible CPUs
    (at most half: the hash holds the rest, and --max-cgroups stays the total)."""
    per_slot = max(1, ncpu) * VALUE_WORDS * 8
    budget = max(MIN_SLOTS, min(MAX_SLOTS, SLOT_BUDGET_BYTES // per_slot))
    return max(1, min(budget, max_cgroups // 2))


def object_path() -> str:
    # beside this module (the package is installed as files: libbpf opens a path), not through
    # importlib.resources, whose imports cost the agent ~0.7 MB
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runqlat.bpf.o")
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


class _ByKey:
    """One read's ids and a value per id (a numpy array), as a dict only when asked: forget()
    needs one, an interval does not (building it cost a Python loop over every id)."""

    def __init__(self, keys: list[int], values: np.ndarray) -> None:
        self.keys, self.values = keys, values
        self._dict: dict[int, int] | None = None

    def as_dict(self) -> dict[int, int]:
        if self._dict is None:
            self._dict = dict(zip(self.keys, self.values.tolist(), strict=True))
        return self._dict


class CoreProbe:
    """Loads and attaches the CO-RE program once; read() copies the per-cgroup histograms."""

    backend = "core"

    def __init__(self, hierarchy: Hierarchy, max_cgroups: int = 8192,
                 bpf_stats: bool = True, slots: int | None = None) -> None:
        """`slots`: how many cgroups get a slotted histogram (default: slot_count()); tests set
        it to exercise the hash path."""
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
            self._configure(max(2, max_cgroups), slots)
            if lib.bpf_object__load(self.obj) != 0:
                raise explain_load_failure(self.bpf.errno() or errno.EINVAL,
                                           self.bpf.last_message())
            self._hists_fd = lib.bpf_map__fd(self._maps["hists"])
            self._stats_map_fd = lib.bpf_map__fd(self._maps["stats"])
            self._slot_of_fd = lib.bpf_map__fd(self._maps["cgroup_slot"])
            self._free_slots_fd = lib.bpf_map__fd(self._maps["free_slots"])
            # highest first: the stack hands out slot 0 first, so the used range stays compact
            push_free_slots(self._free_slots_fd, list(range(self.slots - 1, -1, -1)))
            self.capacity = lib.bpf_map__max_entries(self._maps["hists"]) + self.slots
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
            slot_fd = lib.bpf_map__fd(self._maps["slot_hists"])
            self._slot_hists: MappedSlots | SlotArray = \
                MappedSlots(slot_fd, VALUE_WORDS, self._cpu_ids, self._stride) if self._mapped \
                else SlotArray(slot_fd, VALUE_WORDS, self._ncpu)
            if bpf_stats:
                # Held open, this fd keeps kernel.bpf_stats_enabled on for as long as we run.
                self._stats_fd = enable_bpf_stats()
        except BaseException:
            self.close()
            raise
        self._hists = HistMap(self._hists_fd, VALUE_WORDS, self._ncpu)  # a per-CPU hash
        self._slot_of = HistMap(self._slot_of_fd, 1)  # cgroup id -> slot
        self._stat_count = min(RQ_STAT_SLOTTED + 1,
                               lib.bpf_map__max_entries(self._maps["stats"]))
        # cgroup_slot as last read, kept while the BPF side's count of slots given is unchanged
        # and nothing was forgotten: the interval then reads no hash for it
        self._slot_cache: tuple[list[int], np.ndarray] | None = None
        self._slotted_seen: int | None = None
        self._slotted_confirmed = False
        # as of the last read, for forget(): each id's slot, and each id's waits
        self._slots_read = _ByKey([], np.zeros(0, dtype=np.int64))
        self._counts_read = _ByKey([], np.zeros(0, dtype=np.uint64))
        self._quarantine: list[tuple[float, int]] = []  # (forgotten at, slot)
        self._forgotten_events = 0  # counts of histograms dropped by forget(), for events_total
        self._prev_hists: dict[int, CgroupHistogram] = {}

    def _configure(self, max_cgroups: int, slots: int | None) -> None:
        lib = self.bpf.lib
        self._maps = {}
        for m, name in self.bpf.iter_maps(self.obj):
            short = name.split(".")[-1] if name.startswith(("runqlat.", ".")) else name
            self._maps[short] = m
        missing = {"hists", "stats", "rodata", "slot_hists", "cgroup_slot",
                   "free_slots"} - self._maps.keys()
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
        wanted = FAST_PATH if self.sched_info else FALLBACK
        for prog, name in self.bpf.iter_programs(self.obj):
            lib.bpf_program__set_autoload(prog, name in wanted or name == SEED)
        self._ncpu = lib.libbpf_num_possible_cpus()
        self.slots = min(max_cgroups - 1, slots) if slots else \
            slot_count(self._ncpu, max_cgroups)
        self._mapped = lib.bpf_map__type(self._maps["slot_hists"]) == BPF_MAP_TYPE_ARRAY
        # struct rq_config; objects built before the mapped slots have only its first two fields
        if self._mapped:
            if size.value < 16:
                raise ProbeError(f"{object_path()}: unexpected .rodata layout: rebuild with "
                                 "make bpf")
            # one copy of every slot per CPU id (ids, not the count: the possible set may have
            # gaps), each CPU's copies a whole number of cache lines (8 x 1064 B = 133 x 64)
            self._cpu_ids = possible_cpu_ids()
            self._stride = -(-self.slots // 8) * 8
            config = struct.pack("<IIII", hier, int(self.sched_info), self._stride, 0)
        else:
            config = struct.pack("<II", hier, int(self.sched_info))
        ctypes.memmove(ro, config, len(config))
        for name in ("slot_hists", "cgroup_slot", "free_slots"):
            lib.bpf_map__set_max_entries(self._maps[name], self.slots)
        if self._mapped:  # (a per-CPU array keeps a copy per CPU itself)
            lib.bpf_map__set_max_entries(self._maps["slot_hists"], self._stride * self._cpu_ids)
        lib.bpf_map__set_max_entries(self._maps["hists"], max_cgroups - self.slots)

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
        self._release_slots(now)
        totals = self._read_stat_totals()  # first: the slotted count must not be newer
        keys, rows = self._read_merged(totals[RQ_STAT_SLOTTED] if len(totals) > RQ_STAT_SLOTTED
                                       else None)
        counts = rows[:, :SLOTS].sum(axis=1, dtype=np.uint64)
        self._counts_read = _ByKey(keys, counts)
        events = self._forgotten_events + int(counts.sum())
        return RowsReading(now, self.hierarchy, keys, rows, [True] * len(keys),
                           self._probe_stats(totals, len(keys), events), counts)

    @property
    def _cgroup_slots(self) -> dict[int, int]:
        return self._slots_read.as_dict()

    def _read_merged(self, slotted: int | None) -> tuple[list[int], np.ndarray]:
        """Slotted and hashed histograms as one matrix. A cgroup is in both only if it got a
        slot after its first waits went to the hash (slots were all taken then): its rows add.
        `slotted`: the BPF side's count of slots given, read before this (None: not counted)."""
        if self._slot_cache is None or slotted is None or slotted != self._slotted_seen \
                or not self._slotted_confirmed:
            read_keys, slot_rows = self._slot_of.read_rows()
            self._slot_cache = read_keys, slot_rows[:, 0].astype(np.int64)
            # Trusted from the read after one that saw the same count: the count is a plain
            # store after the insert, which a weakly ordered CPU (arm64) may make visible first.
            self._slotted_confirmed = slotted is not None and slotted == self._slotted_seen
            self._slotted_seen = slotted
        keys, slots = self._slot_cache
        slot_keys = list(keys)  # the caller's copy: the cache stays as read
        self._slots_read = _ByKey(slot_keys, slots)
        rows = self._slot_hists.read(slots)
        hkeys, hrows = self._hists.read_rows()
        if not hkeys:
            return slot_keys, rows
        if not slot_keys:
            return hkeys, hrows
        at = {k: i for i, k in enumerate(slot_keys)}
        extra = []
        for i, k in enumerate(hkeys):
            if k in at:
                rows[at[k]] += hrows[i]
            else:
                extra.append(i)
        return slot_keys + [hkeys[i] for i in extra], np.concatenate([rows, hrows[extra]])

    def _release_slots(self, now: float) -> None:
        """Zero the slots of cgroups forgotten a quarantine ago and give them back to the BPF
        side."""
        ready = [s for t, s in self._quarantine if now - t >= SLOT_QUARANTINE_S]
        if not ready:
            return
        self._quarantine = [(t, s) for t, s in self._quarantine if now - t < SLOT_QUARANTINE_S]
        for slot in ready:
            self._slot_hists.zero(slot)
        push_free_slots(self._free_slots_fd, sorted(ready, reverse=True))

    def _read_stat_totals(self) -> list[int]:
        """enum rq_stat's counters summed over CPUs, as many as the object has."""
        lib = self.bpf.lib
        per_cpu = np.zeros(self._ncpu, dtype=np.uint64)
        totals = []
        for i in range(self._stat_count):  # older objects have fewer
            k = ctypes.c_uint32(i)
            if lib.bpf_map_lookup_elem(self._stats_map_fd, ctypes.byref(k),
                                       per_cpu.ctypes.data):
                if i >= len(STATS):
                    break  # no slotted count this time: the next read re-reads the slots
                per_cpu[:] = 0  # a failed read reports 0, as before
            totals.append(int(per_cpu.sum()))
        return totals

    def _probe_stats(self, totals: list[int], entries: int, events: int) -> ProbeStats:
        run_ns, run_cnt = program_run_stats(self._prog_fds)
        return ProbeStats(events, *totals[:len(STATS)], bpf_run_time_ns=run_ns,
                          bpf_run_count=run_cnt, map_entries=entries, map_capacity=self.capacity)

    def forget(self, cgroup_ids: list[int]) -> None:
        """Drop histograms of cgroups that no longer exist, so the map never fills with ghosts."""
        now = time.monotonic()
        for cid in cgroup_ids:
            self._forgotten_events += self._counts_read.as_dict().pop(cid, 0)
        self._hists.delete(cgroup_ids)
        slotted = [cid for cid in cgroup_ids if cid in self._cgroup_slots]
        self._slot_of.delete(slotted)
        if slotted:
            self._slot_cache = None  # the next read sees cgroup_slot without them
        self._quarantine.extend((now, self._cgroup_slots.pop(cid)) for cid in slotted)

    def close(self) -> None:
        for link in self._links:
            self.bpf.lib.bpf_link__destroy(link)
        self._links = []
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
        slots = getattr(self, "_slot_hists", None)
        try:
            if isinstance(slots, MappedSlots):
                slots.close()
        finally:
            if getattr(self, "obj", None):
                self.bpf.lib.bpf_object__close(self.obj)
            self.obj = None

    def __enter__(self) -> CoreProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
