"""The `bcc` backend: run-queue latency per cgroup, compiled by BCC at start, from tracepoint
fields only.

Same output as the `core` backend (probes/core.py): cumulative per-cgroup histograms in the
128-slot scheme of probes/runqlat.h, keyed by cgroup id (the inode of the cgroup directory in the
measured hierarchy), plus the same self-counters.

How it measures (the program, probes/runqlat_bcc.bpf.c, says why): waits stamped at wakeup and
at preempting switches, ended at switch-in, and attributed one run slice late (at the waiting
task's next switch-out, when it is `current`), so a wait whose task is still running when read()
is called shows up in a later read.

- cgroup v2: histograms are keyed by `bpf_get_current_cgroup_id()` in the kernel, as in `core`.
- cgroup v1 `cpu` hierarchy: no BPF helper returns a v1 cgroup id and struct offsets are off
  limits, so the kernel keys histograms by process (tgid) and user space folds them into cgroups:
  at each read() the new counts of every process go to the cgroup named by the `cpu` line of
  /proc/<tgid>/cgroup (stat() of that directory gives its id). Counts are folded as deltas, so a
  process that moves between cgroups moves its future waits only, and per-cgroup counters stay
  cumulative when processes exit (their kernel entries are then deleted). A process that starts
  and exits between two reads is never seen in /proc: its waits go to the cgroup of its parent
  (recorded at fork in an LRU map; right for workers that stay in their parent's cgroup, wrong
  for a child moved into another cgroup before it exits), or, when that is unknown too, are
  counted in `no_cgroup`. In v1 mode the kernel map is sized in processes, not cgroups, and
  read() costs one /proc read per process that waited since the last read.
- Who held the CPU (CgroupHistogram.held_ns) is not measured: tracepoint fields do not flag
  kernel threads, and in v1 the kernel could only tell "same process"; held_ns is None.
- Against the kernel's own /proc/<pid>/schedstat run_delay (Linux 6.18): per-cgroup sums agree
  within 1-2 % for contended cgroups. Wakeups of a task onto an idle or lightly loaded CPU wait
  5-15 us from `sched_wakeup` to switch-in; this program (like core's wakeup-stamping fallback)
  counts them, while schedstat, and core's fast path that reads the same enqueue stamp, leave
  most of them out. So for a task that only sleeps and wakes, this backend reports more waits
  (and ~10 us more per wakeup) than schedstat does.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from runqscale.probes.errors import ProbeError
from runqscale.probes.libbpf import LibBpf
from runqscale.probes.maps import HistMap, enable_bpf_stats, program_run_stats
from runqscale.probes.model import (
    SLOTS,
    VALUE_WORDS,
    CgroupHistogram,
    Hierarchy,
    ProbeReading,
    ProbeStats,
)

STATS = ("map_full", "no_cgroup")  # enum rq_stat order
START_ENTRIES = 32768  # runnable (not yet switched-in) threads the start-stamp hash can hold
V1_MIN_PROCESSES = 32768  # v1 mode keys the kernel map by process: never size it below this
PARENT_ENTRIES = 16384  # v1 mode: LRU map child pid -> parent tgid, for processes seen only dead
EXITED_MEMORY = 4096  # v1 mode: cgroups of that many exited processes are kept for their children
TASK_REPORT_MAX_DEFAULT = 0x100  # Linux >= 4.14
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
SWITCH_FORMAT = "events/sched/sched_switch/format"

PROGRAM = "runqlat_bcc.bpf.c"  # the tracepoint-fields-only twin of runqlat.bpf.c


def _import_bcc() -> ModuleType:
    try:
        import bcc  # noqa: PLC0415 - optional dependency, only this backend needs it
    except ImportError as e:
        raise ProbeError(
            f"BCC's Python binding is not importable ({e}): install python3-bpfcc and use a "
            "virtualenv made with --system-site-packages (or use --backend core)"
        ) from e
    return bcc


def _kernel_source_dirs(release: str, modules_dir: str = "/lib/modules") -> list[str]:
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        return [env]
    return [os.path.join(modules_dir, release, d) for d in ("build", "source")]


def check_preconditions(release: str | None = None, modules_dir: str = "/lib/modules",
                        kheaders: str = "/sys/kernel/kheaders.tar.xz",
                        tracefs_dirs: tuple[str, ...] = TRACEFS_DIRS) -> str:
    """Raise a one-line ProbeError naming the fix; returns the tracefs directory to use."""
    if os.geteuid() != 0:
        raise ProbeError(
            "the bcc backend needs root (BCC compiles and attaches as root): run with sudo, "
            "or use --backend core, which needs only CAP_BPF and CAP_PERFMON"
        )
    release = release or os.uname().release
    dirs = _kernel_source_dirs(release, modules_dir)
    if not any(os.path.isdir(os.path.join(d, "include")) for d in dirs) \
            and not os.path.exists(kheaders):
        raise ProbeError(
            f"kernel headers for {release} not found ({dirs[0]} is missing): run "
            "`make kernel-headers` (or install linux-headers and link them there), "
            "or use --backend core"
        )
    for d in tracefs_dirs:
        if os.path.exists(os.path.join(d, SWITCH_FORMAT)):
            return d
    raise ProbeError(
        "tracefs is not mounted (no sched/sched_switch tracepoint format found): "
        "run `mount -t tracefs nodev /sys/kernel/tracing`"
    )


def task_report_max(format_text: str) -> int:
    """The value sched_switch's prev_state takes for a preempted task (TASK_REPORT_MAX), read
    from the tracepoint's print format (`REC->prev_state & <expr> ? "+"`)."""
    for m in re.finditer(r'REC->prev_state & ([0-9a-fx|+<() ]+?) \? "\+"', format_text):
        expr = m.group(1)
        try:
            value = eval(expr, {"__builtins__": {}}, {})  # noqa: S307 - digits and |+<() only
        except Exception:  # not an arithmetic expression after all
            continue
        if isinstance(value, int) and value >= 0x80 and value & (value - 1) == 0:
            return value
    return TASK_REPORT_MAX_DEFAULT


@dataclass
class _Process:
    """v1 mode: what was already folded from one process's kernel entry, and where to."""

    folded: np.ndarray  # the kernel value (VALUE_WORDS) already added to a cgroup
    cgroup_id: int | None  # where its counts went last


class BccProbe:
    """Compiles, loads and attaches the tracepoint program; read() returns per-cgroup histograms.

    Compiling is the start-up cost: 0.25 s on an idle 2-CPU machine, up to ~3 s under load.
    """

    backend = "bcc"

    def __init__(self, hierarchy: Hierarchy, root: str, max_cgroups: int = 8192,
                 bpf_stats: bool = True) -> None:
        tracefs = check_preconditions()
        bcc = _import_bcc()
        self.hierarchy = hierarchy
        self.root = root.rstrip("/") or "/"
        self._stats_fd = -1
        self._bpf: Any = None
        v2 = hierarchy is Hierarchy.V2
        self.capacity = max_cgroups if v2 else max(max_cgroups, V1_MIN_PROCESSES)
        with open(os.path.join(tracefs, SWITCH_FORMAT)) as f:
            preempted = task_report_max(f.read())
        here = os.path.dirname(os.path.abspath(__file__))
        cflags = [
            f"-I{here}",
            f"-DHIER={0 if v2 else 1}",
            f"-DMAX_KEYS={self.capacity}",
            f"-DSTART_ENTRIES={START_ENTRIES}",
            f"-DPARENT_ENTRIES={PARENT_ENTRIES}",
            f"-DTASK_REPORT_MAX={preempted:#x}",
        ]
        t0 = time.monotonic()
        try:
            self._bpf = bcc.BPF(src_file=os.path.join(here, PROGRAM).encode(), cflags=cflags)
        except Exception as e:  # BCC raises bare Exception for compile, load and attach errors
            raise ProbeError(
                f"BCC could not compile or attach the probe ({e}); the compiler's messages are "
                "above: check `make kernel-headers`, or use --backend core"
            ) from e
        self.start_seconds = time.monotonic() - t0
        try:
            self._hists_fd = self._bpf[b"hists"].map_fd
            self._stats_table = self._bpf[b"stats"]
            self._parents_fd = self._bpf[b"parents"].map_fd if not v2 else -1
            self._prog_fds = [fn.fd for fn in self._bpf.funcs.values()]
            if bpf_stats:
                self._stats_fd = enable_bpf_stats()
        except BaseException:
            self.close()
            raise
        ncpu = LibBpf.load().libbpf_num_possible_cpus()
        self._hists = HistMap(self._hists_fd, VALUE_WORDS, ncpu)  # a per-CPU hash
        # v1 mode state: per-process fold bookkeeping and the per-cgroup accumulators.
        self._procs: dict[int, _Process] = {}
        self._acc: dict[int, np.ndarray] = {}
        self._exited: dict[int, int] = {}  # tgid -> cgroup id of processes that exited lately
        self._lost = 0  # waits of processes whose cgroup could not be found
        self._forgotten_events = 0  # counts of histograms dropped by forget(), for events
        self._last_counts: dict[int, int] = {}
        self._kernel_entries = 0

    # -- reading -------------------------------------------------------------------------------

    def read(self) -> ProbeReading:
        now = time.monotonic()
        raw = self._hists.read()
        self._kernel_entries = len(raw)
        if self.hierarchy is Hierarchy.V2:
            hists = {k: CgroupHistogram.from_row(k, v, held=False) for k, v in raw.items()}
        else:
            self._kernel_entries -= self._fold_v1(raw)
            hists = {k: CgroupHistogram.from_row(k, v, held=False) for k, v in self._acc.items()}
        self._last_counts = {cid: h.count for cid, h in hists.items()}
        events = self._forgotten_events + sum(self._last_counts.values())
        return ProbeReading(now, self.hierarchy, hists, self._read_stats(events))

    def _read_stats(self, events: int) -> ProbeStats:
        map_full, no_cgroup = (int(sum(self._stats_table[ctypes.c_int(i)]))
                               for i in range(len(STATS)))
        run_ns, run_cnt = program_run_stats(self._prog_fds)
        return ProbeStats(events, map_full, no_cgroup + self._lost, bpf_run_time_ns=run_ns,
                          bpf_run_count=run_cnt, map_entries=self._kernel_entries,
                          map_capacity=self.capacity)

    # -- v1: fold per-process kernel histograms into cgroups ----------------------------------

    def _fold_v1(self, raw: dict[int, np.ndarray]) -> int:
        """Fold new counts into the per-cgroup accumulators; returns kernel entries deleted."""
        for tgid in [t for t in self._procs if t not in raw]:
            del self._procs[tgid]  # its kernel entry went away (forget(), or deleted below)
        pending: list[tuple[int, _Process, np.ndarray, int]] = []
        gone: list[int] = []
        # Live processes first, so that exited children can be given their parent's cgroup.
        for tgid, value in raw.items():
            proc = self._procs.get(tgid)
            if proc is None:
                proc = self._procs[tgid] = _Process(np.zeros(VALUE_WORDS, np.uint64), None)
            if (value < proc.folded).any():  # entry deleted and recreated: all of it is new
                proc.folded[:] = 0
            delta = value - proc.folded
            proc.folded = value
            alive = os.path.exists(f"/proc/{tgid}")
            if alive:
                cid = self._cgroup_of(tgid)
                if cid is not None:
                    proc.cgroup_id = cid
            else:
                gone.append(tgid)
            waits = int(delta[:SLOTS].sum())
            if waits:
                pending.append((tgid, proc, delta, waits))
        for tgid, proc, delta, waits in pending:
            cid = proc.cgroup_id
            if cid is None:
                cid = proc.cgroup_id = self._parent_cgroup(tgid)
            if cid is None:
                self._lost += waits
                continue
            acc = self._acc.get(cid)
            # A new array, never `+=`: the previous reading holds views of the old one, and
            # mutating it made every later delta's slots zero (p95 null, events still right).
            self._acc[cid] = delta if acc is None else acc + delta
        # Folded: delete their kernel entries (a pid reused later starts a fresh one), and
        # remember their cgroups a while for children that exit after them.
        self._hists.delete(gone)
        for tgid in gone:
            proc = self._procs.pop(tgid)
            if proc.cgroup_id is not None:
                self._exited[tgid] = proc.cgroup_id
        while len(self._exited) > EXITED_MEMORY:
            del self._exited[next(iter(self._exited))]  # oldest first (insertion order)
        return len(gone)

    def _cgroup_of(self, tgid: int) -> int | None:
        """The id of the process's cgroup in the v1 cpu hierarchy, None if gone or unknown."""
        try:
            with open(f"/proc/{tgid}/cgroup") as f:
                text = f.read()
        except OSError:
            return None
        for line in text.splitlines():
            _, ctrls, path = line.split(":", 2)
            if "cpu" in ctrls.split(","):
                try:
                    return os.stat(self.root + path.rstrip("/")).st_ino if path != "/" \
                        else os.stat(self.root).st_ino
                except OSError:
                    return None
        return None

    def _parent_cgroup(self, tgid: int, depth: int = 4) -> int | None:
        """For a process that exited unseen: the cgroup of the nearest known ancestor."""
        child, parent = ctypes.c_uint32(tgid), ctypes.c_uint32()
        for _ in range(depth):
            if LibBpf.load().bpf_map_lookup_elem(self._parents_fd, ctypes.byref(child),
                                                 ctypes.byref(parent)) != 0 or not parent.value:
                return None
            proc = self._procs.get(parent.value)
            if proc is not None and proc.cgroup_id is not None:
                return proc.cgroup_id
            cid = self._exited.get(parent.value) or self._cgroup_of(parent.value)
            if cid is not None:
                return cid
            child.value = parent.value
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    def forget(self, cgroup_ids: list[int]) -> None:
        """Drop histograms of cgroups that no longer exist, so the map never fills with ghosts."""
        for cid in cgroup_ids:
            self._forgotten_events += self._last_counts.pop(cid, 0)
        if self.hierarchy is Hierarchy.V2:
            self._hists.delete(cgroup_ids)
            return
        drop = set(cgroup_ids)
        for cid in drop:
            self._acc.pop(cid, None)
        tgids = [t for t, p in self._procs.items() if p.cgroup_id in drop]
        self._hists.delete(tgids)
        for tgid in tgids:
            del self._procs[tgid]

    def close(self) -> None:
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
        if self._bpf is not None:
            self._bpf.cleanup()  # detaches the tracepoints, closes program and map fds
            self._bpf = None

    def __enter__(self) -> BccProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
