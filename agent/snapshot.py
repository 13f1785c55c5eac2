"""What the agent hands the exporter: one immutable snapshot per interval.

The sampling loop builds a new `AgentSnapshot` after every interval (and after a failed one, to
count it) and swaps a single reference to it; a scrape takes that reference and renders it, with
no lock and no access to the agent's working state. Everything in it is immutable: the
interval's cumulative matrix (a read-only array), the window's start (agent/cumulative.py: the
changes since it, immutable), and one `ContainerRow` per container (its row, labels and path),
a tuple rebuilt only when a container comes, goes or changes labels. So an interval allocates
one matrix and one change, not an object per container.

CPU accounting is read at render time: cgroup counters are cumulative and exact whenever read,
and reading cpu.stat for every container every interval would cost more than the rest of the
interval together. The snapshot carries `cpu_reader` (the cgroup path to its counters, read now
from files kept open: probes/cgroupfs.py, CpuStatReader).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runqscale.agent.attribution import Labels
from runqscale.agent.cumulative import NO_START, WindowStart, window_slots
from runqscale.probes.cgroupfs import CpuStat
from runqscale.probes.model import SLOTS, VALUE_WORDS, CgroupHistogram, ProbeStats

_NO_ROWS = np.zeros((0, VALUE_WORDS), dtype=np.uint64)
_NO_ROWS.flags.writeable = False


@dataclass(frozen=True, slots=True)
class ContainerRow:
    cgroup_id: int
    path: str  # relative to the measured hierarchy's root
    labels: Labels
    row: int  # in the snapshot's matrices
    held: bool  # whether the backend splits its wait by holder


@dataclass(frozen=True)
class AgentSnapshot:
    taken_at: float  # monotonic time of the sample
    containers: tuple[ContainerRow, ...]
    probe: ProbeStats
    samples: int  # intervals sampled so far
    sample_errors: int
    attribution_misses: int  # waits whose cgroup id did not resolve to a path
    unknown_pods: int
    cpu_reader: Callable[[str], CpuStat | None] | None = None
    # since the agent (and its probe) started, per row; and the window's start (rows of it are
    # worked out from `cumulative` when asked for)
    cumulative: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    window_start: WindowStart = NO_START

    def cpu_of(self, c: ContainerRow) -> CpuStat | None:
        """The container's CPU accounting, read now."""
        return self.cpu_reader(c.path) if self.cpu_reader is not None else None

    def rows(self) -> np.ndarray:
        """The containers' rows, in `containers` order (for vectorised rendering)."""
        return np.fromiter((c.row for c in self.containers), dtype=np.intp,
                           count=len(self.containers))

    def window(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Slot counts of the waits inside the window, one row per container."""
        return window_slots(self.cumulative, self.window_start,
                            self.rows() if rows is None else rows)

    def total(self, c: ContainerRow) -> CgroupHistogram:
        """One container's cumulative histogram (tests, tools; the exporter uses matrices)."""
        v = self.cumulative[c.row]
        return CgroupHistogram(c.cgroup_id, v[:SLOTS], int(v[SLOTS]), int(v[:SLOTS].sum()),
                               v[SLOTS + 1:] if c.held else None)


EMPTY = AgentSnapshot(0.0, (), ProbeStats(), 0, 0, 0, 0)
