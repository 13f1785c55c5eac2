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
# What held the CPU longest while a task waited (enum rq_holder order).
HOLDERS = ("same_cgroup", "other_cgroup", "kernel", "idle")
VALUE_WORDS = SLOTS + 1 + len(HOLDERS)  # struct rq_hist: slots, sum_ns, held_ns[]


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
_NOTHING_HELD = np.zeros(len(HOLDERS), dtype=np.uint64)
_NOTHING_HELD.flags.writeable = False


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


def quantiles_rows(slots: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """quantile_seconds for every row of a (rows, SLOTS) matrix and every q at once: a
    (rows, len(qs)) array of seconds, NaN where a row is empty. Same interpolation."""
    n = len(slots)
    cum = np.cumsum(slots, axis=1, dtype=np.float64)
    total = cum[:, -1] if n else np.zeros(0)
    rows = np.arange(n)
    out = np.full((n, len(qs)), np.nan)
    for j, q in enumerate(qs):
        rank = q * total
        i = np.minimum((cum < rank[:, None]).sum(axis=1), SLOTS - 1)  # searchsorted, left
        before = np.where(i > 0, cum[rows, i - 1], 0.0)
        inside = slots[rows, i].astype(np.float64)
        lo = SLOT_LOW_NS[i]
        hi = np.where(np.isfinite(SLOT_HIGH_NS[i]), SLOT_HIGH_NS[i], lo * 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.clip(np.where(inside > 0, (rank - before) / inside, 0.0), 0.0, 1.0)
        out[:, j] = np.where(total > 0, (lo + (hi - lo) * frac) / 1e9, np.nan)
    return out


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
    # sum_ns split by what held the CPU longest during each wait (uint64[len(HOLDERS)]); None
    # where the backend cannot tell (bcc on cgroup v1).
    held_ns: np.ndarray | None = None

    @classmethod
    def from_row(cls, cgroup_id: int, row: np.ndarray, held: bool = True) -> CgroupHistogram:
        """From a kernel map value: SLOTS counters, the sum (the count is the slots' total),
        then the sum split by holder."""
        slots = row[:SLOTS]  # views: the map reader hands out one fresh row per entry
        held_ns = row[SLOTS + 1:VALUE_WORDS] if held and len(row) >= VALUE_WORDS else None
        return cls(cgroup_id, slots, int(row[SLOTS]), int(slots.sum()), held_ns)

    @classmethod
    def from_rows(cls, keys: list[int], rows: np.ndarray,
                  previous: dict[int, CgroupHistogram]) -> dict[int, CgroupHistogram]:
        """A whole map read at once (rows: one kernel value per key). Counts and sums come
        from one vectorised pass; an entry that did not change since `previous` (most, on an
        idle node) is that very object, so consumers can tell "no new waits" by identity."""
        if not len(keys):
            return {}
        counts = rows[:, :SLOTS].sum(axis=1, dtype=np.uint64).tolist()
        sums = rows[:, SLOTS].tolist()
        held = rows.shape[1] >= VALUE_WORDS
        out = {}
        for i, (k, n, total) in enumerate(zip(keys, counts, sums, strict=True)):
            old = previous.get(k)
            if old is not None and old.count == n and old.sum_ns == total:
                out[k] = old
                continue
            row = rows[i].copy()  # its own array: a view would keep the whole read alive
            out[k] = cls(k, row[:SLOTS], total, n, row[SLOTS + 1:VALUE_WORDS] if held else None)
        return out

    def minus(self, earlier: CgroupHistogram | None) -> CgroupHistogram:
        if earlier is None or self.count < earlier.count or self.sum_ns < earlier.sum_ns:
            return self  # first sight, or the kernel entry was deleted and re-created: a reset
        nothing = None if self.held_ns is None else _NOTHING_HELD
        if self.count == earlier.count:  # idle: most cgroups, most intervals; no allocation
            return CgroupHistogram(self.cgroup_id, _NO_WAITS, 0, 0, nothing)
        held = None if self.held_ns is None or earlier.held_ns is None \
            else self.held_ns - earlier.held_ns
        return CgroupHistogram(
            self.cgroup_id, self.slots - earlier.slots, self.sum_ns - earlier.sum_ns,
            self.count - earlier.count, held,
        )

    def held_seconds(self) -> dict[str, float] | None:
        """The wait split by holder, in seconds (the `probe --json` field wait_by_holder)."""
        if self.held_ns is None:
            return None
        return {name: float(v) / 1e9 for name, v in zip(HOLDERS, self.held_ns, strict=True)}


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


@dataclass(frozen=True)
class RowsReading:
    """A probe reading as one matrix (what the agent consumes every interval): row i holds the
    cumulative kernel value of cgroup keys[i] (SLOTS counters, sum_ns, held_ns[HOLDERS])."""

    monotonic_s: float
    hierarchy: Hierarchy
    keys: list[int]
    rows: np.ndarray  # uint64 (len(keys), VALUE_WORDS)
    held: list[bool]  # per row: whether held_ns is known (False: a backend that cannot tell)
    stats: ProbeStats
    counts: np.ndarray | None = None  # per row: waits (the sum of its slots), if already summed


def rows_reading(reading: ProbeReading) -> RowsReading:
    """Any backend's reading as a RowsReading (the core backend reads its map this way
    directly; this is for the others)."""
    keys = list(reading.histograms)
    rows = np.zeros((len(keys), VALUE_WORDS), dtype=np.uint64)
    held = []
    for i, h in enumerate(reading.histograms.values()):
        rows[i, :SLOTS] = h.slots
        rows[i, SLOTS] = h.sum_ns
        if h.held_ns is not None:
            rows[i, SLOTS + 1:] = h.held_ns
        held.append(h.held_ns is not None)
    return RowsReading(reading.monotonic_s, reading.hierarchy, keys, rows, held, reading.stats)

