"""What the agent hands the exporter: one immutable snapshot per interval.

The sampling loop builds a new `AgentSnapshot` after every interval (and after a failed one, to
count it) and swaps a single reference to it; a scrape takes that reference and renders it, with
no lock and no access to the agent's working state. Everything in it is immutable: the probe's
cumulative histograms, each container's window (the two cumulative arrays it spans:
agent/window.py), its labels and CPU accounting. Building it allocates one small object per
container per interval (the agent is a guest on every node: CPU and GC pressure count).

CPU accounting is the one thing read at render time when the sampler skips it (the agent's
default): cgroup counters are cumulative and exact whenever read, and reading cpu.stat for every
container every interval would cost more than the rest of the interval together. The snapshot
then carries `cpu_reader` (a pure function of the cgroup path) and `cpu_of` calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runqscale.agent.attribution import Labels
from runqscale.agent.window import WindowView
from runqscale.probes.cgroupfs import CpuStat
from runqscale.probes.model import CgroupHistogram, ProbeStats


@dataclass(frozen=True, slots=True)
class ContainerSnapshot:
    cgroup_id: int
    path: str  # relative to the measured hierarchy's root
    labels: Labels
    total: CgroupHistogram  # cumulative since the agent (and its probe) started
    window_newest: np.ndarray | None  # the last `--window`'s waits: newest cumulative slots
    window_start: np.ndarray  # ... minus these (agent/window.py)
    cpu: CpuStat | None  # as sampled (None: not sampled, see AgentSnapshot.cpu_of)

    @property
    def window(self) -> WindowView:
        return WindowView(self.window_newest, self.window_start)


@dataclass(frozen=True)
class AgentSnapshot:
    taken_at: float  # monotonic time of the sample
    containers: tuple[ContainerSnapshot, ...]
    probe: ProbeStats
    samples: int  # intervals sampled so far
    sample_errors: int
    attribution_misses: int  # waits whose cgroup id did not resolve to a path
    unknown_pods: int
    cpu_reader: Callable[[str], CpuStat | None] | None = None

    def cpu_of(self, c: ContainerSnapshot) -> CpuStat | None:
        """The container's CPU accounting: sampled, or read now when the sampler skips it."""
        return self.cpu_reader(c.path) if self.cpu_reader is not None else c.cpu


EMPTY = AgentSnapshot(0.0, (), ProbeStats(), 0, 0, 0, 0)
