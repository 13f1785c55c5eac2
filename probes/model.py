"""What every probe backend returns: cumulative per-cgroup run-queue latency histograms.

The slot scheme mirrors probes/runqlat.h: slots 0-3 hold 0-3 ns, then four slots per power of
two (slot = 4 * (msb - 1) + the two bits after the most significant one), 128 slots in all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

SUB_BITS = 2
SUBS = 1 << SUB_BITS
SLOTS = 128


def _slot_bounds() -> tuple[np.ndarray, np.ndarray]:
    lo = np.zeros(SLOTS, dtype=np.float64)
    hi = np.zeros(SLOTS, dtype=np.float64)
    for s in range(SLOTS):
        if s < SUBS:
            lo[s], hi[s] = s, s + 1
            continue
        msb, sub = s // SUBS + 1, s % SUBS
        width = 1 << (msb - SUB_BITS)
        lo[s] = (SUBS + sub) * width
        hi[s] = lo[s] + width
    hi[-1] = np.inf  # the last slot also takes everything longer
    return lo, hi


SLOT_LOW_NS, SLOT_HIGH_NS = _slot_bounds()
_NO_WAITS = np.zeros(SLOTS, dtype=np.uint64)
_NO_WAITS.flags.writeable = False  # shared by every idle delta


def slot_of(ns: int) -> int:
    """The slot the kernel puts a wait of `ns` nanoseconds in (same arithmetic as the BPF side)."""
    if ns < SUBS:
        return int(ns)
    msb = int(ns).bit_length() - 1
    slot = ((msb - 1) << SUB_BITS) + ((int(ns) >> (msb - SUB_BITS)) & (SUBS - 1))
    return min(slot, SLOTS - 1)


def quantile_seconds(slots: np.ndarray, q: float) -> float | None:
    """Quantile of a (delta) slot histogram, interpolated inside the slot; None if empty."""
    total = float(slots.sum())
    if total <= 0:
        return None
    rank = q * total
    cum = np.cumsum(slots, dtype=np.float64)
    i = int(np.searchsorted(cum, rank, side="left"))
    i = min(i, SLOTS - 1)
    before = cum[i - 1] if i else 0.0
    inside = float(slots[i])
    lo = SLOT_LOW_NS[i]
    hi = SLOT_HIGH_NS[i] if np.isfinite(SLOT_HIGH_NS[i]) else lo * 2
    frac = (rank - before) / inside if inside else 0.0
    return float(lo + (hi - lo) * min(max(frac, 0.0), 1.0)) / 1e9


class Hierarchy(StrEnum):
    V2 = "v2"
    V1_CPU = "v1"


@dataclass(frozen=True)
class CgroupHistogram:
    """Cumulative since the probe was loaded (Prometheus counter semantics)."""

    cgroup_id: int
    slots: np.ndarray  # uint64[SLOTS]
    sum_ns: int
    count: int

    @classmethod
    def from_row(cls, cgroup_id: int, row: np.ndarray) -> CgroupHistogram:
        """From a kernel map value: SLOTS counters then the sum (the count is their total)."""
        slots = row[:SLOTS]  # a view: the map reader hands out one fresh row per entry
        return cls(cgroup_id, slots, int(row[SLOTS]), int(slots.sum()))

    def minus(self, earlier: CgroupHistogram | None) -> CgroupHistogram:
        if earlier is None or self.count < earlier.count or self.sum_ns < earlier.sum_ns:
            return self  # first sight, or the kernel entry was deleted and re-created: a reset
        if self.count == earlier.count:  # idle: most cgroups, most intervals; no allocation
            return CgroupHistogram(self.cgroup_id, _NO_WAITS, 0, 0)
        return CgroupHistogram(
            self.cgroup_id, self.slots - earlier.slots, self.sum_ns - earlier.sum_ns,
            self.count - earlier.count,
        )


@dataclass(frozen=True)
class ProbeStats:
    """Cumulative probe self-counters."""

    events: int = 0
    map_full: int = 0
    no_cgroup: int = 0
    bpf_run_time_ns: int = 0  # from bpf_stats; 0 when stats are off
    bpf_run_count: int = 0
    map_entries: int = 0
    map_capacity: int = 0


@dataclass(frozen=True)
class ProbeReading:
    monotonic_s: float
    hierarchy: Hierarchy
    histograms: dict[int, CgroupHistogram] = field(default_factory=dict)
    stats: ProbeStats = field(default_factory=ProbeStats)
