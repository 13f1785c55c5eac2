"""Affinity recommendations from the Pearson correlation of workloads' CPU usage series (SHOWAR).

Two workloads whose CPU usage moves in opposite directions (r < −0.8) peak at different times and
share a node well: co-locate them (preferred pod affinity). Two that move together (r > 0.8) peak
together and contend: spread them (preferred pod anti-affinity). Series are aligned on common
timestamps; pairs with fewer than `min_samples` common finite samples, or a constant series (r is
undefined), are skipped. Output is sorted by workload names, so it is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from runqscale.scaler.model import CurrentState, Recommendation, SignalWindow, WorkloadRef


@dataclass(frozen=True)
class AffinityPair:
    a: WorkloadRef
    b: WorkloadRef
    r: float
    samples: int
    kind: Literal["co-locate", "spread"]


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson r of two equal-length series; None when either is constant."""
    xc = x - x.mean()
    yc = y - y.mean()
    den = math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc)))
    if den <= 1e-12 * max(1.0, float(np.abs(x).max()) * float(np.abs(y).max())) * x.size:
        return None
    return max(-1.0, min(1.0, float(np.dot(xc, yc)) / den))


def pairs(
    series: Mapping[WorkloadRef, tuple[np.ndarray, np.ndarray]],
    threshold: float = 0.8,
    min_samples: int = 10,
) -> list[AffinityPair]:
    """Affinity pairs from {workload: (ts, cpu usage)}; |r| must exceed `threshold`."""
    names = sorted(series)
    out: list[AffinityPair] = []
    for i, a in enumerate(names):
        ta, ua = series[a]
        for b in names[i + 1 :]:
            tb, ub = series[b]
            common, ia, ib = np.intersect1d(ta, tb, assume_unique=False, return_indices=True)
            if common.size < min_samples:
                continue
            x, y = ua[ia], ub[ib]
            ok = np.isfinite(x) & np.isfinite(y)
            if int(ok.sum()) < min_samples:
                continue
            r = pearson(x[ok], y[ok])
            if r is None:
                continue
            if r < -threshold:
                out.append(AffinityPair(a, b, r, int(ok.sum()), "co-locate"))
            elif r > threshold:
                out.append(AffinityPair(a, b, r, int(ok.sum()), "spread"))
    return out


def recommendations(
    windows: Sequence[SignalWindow],
    current: Mapping[WorkloadRef, CurrentState],
    policy: str = "showar",
    threshold: float = 0.8,
    min_samples: int = 10,
) -> list[Recommendation]:
    """One `affinity` recommendation per pair, on its first workload (sizes unchanged)."""
    by_wl = {w.workload: w for w in windows}
    series = {wl: (w.ts, w.get("cpu_usage_cores")) for wl, w in by_wl.items()}
    out = []
    for pr in pairs(series, threshold, min_samples):
        w = by_wl[pr.a]
        cur = current[pr.a]
        rule = "preferred pod affinity" if pr.kind == "co-locate" else "preferred anti-affinity"
        reason = (
            f"{pr.kind} {pr.a.key} and {pr.b.key}: CPU usage Pearson r = {pr.r:+.2f} over "
            f"{pr.samples} samples ({'<' if pr.r < 0 else '>'} {'-' if pr.r < 0 else ''}"
            f"{threshold:g}): {rule}"
        )
        out.append(
            Recommendation(
                ts=w.now,
                workload=pr.a,
                policy=policy,
                signals={"cpu_usage_cores": w.last("cpu_usage_cores"), "pearson_r": pr.r},
                current=cur,
                recommended=cur,
                action="affinity",
                reason=reason,
            )
        )
    return out
