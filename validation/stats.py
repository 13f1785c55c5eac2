"""Paired comparisons for `report.json`'s `comparisons`: pure statistics, no I/O.

A comparison of policy P against baseline B on a metric uses the runs paired by repeat (both ran
the same schedule, back to back in ABBA order). Per pair the ratio P/B; the reported `ratio` is
the geometric mean of the paired ratios, and the 95 % interval is Student's t on the log ratios
(with a handful of pairs t is the honest choice: a bootstrap of 3 values has 10 distinct
resamples). Below 2 pairs there is no interval (None).

Metrics are all "lower is better". A zero cannot enter a log, so each value is floored at the
metric's resolution (`FLOORS`: e.g. an SLO violation ratio of 0 counts as 0.1 %): two runs that
both met the SLO completely compare as 1, not as 0/0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from runqscale.intervals import log_mean_ci

COMPARED_METRICS = ("cpu_core_seconds_allocated", "cpu_core_seconds_requested", "p99_seconds",
                    "slo_violation_ratio")
FLOORS = {"slo_violation_ratio": 1e-3, "p99_seconds": 1e-4}
DEFAULT_FLOOR = 1e-6
DEFAULT_BASELINES = ("hpa", "vpa", "phpa-knn")
BEST = "best"  # the `baseline` of a comparison against the best baseline of that metric


def floored(metric: str, v: float) -> float:
    return max(float(v), FLOORS.get(metric, DEFAULT_FLOOR))


def paired_values(runs: Sequence[Mapping], policy: str, baseline: str,
                  metric: str) -> list[tuple[float, float]]:
    """(policy, baseline) values of `metric` for every repeat both ran, neither excluded."""
    def by_repeat(name: str) -> dict[int, float]:
        return {int(r["repeat"]): float(r[metric]) for r in runs
                if r["policy"] == name and not r.get("excluded") and r.get(metric) is not None
                and math.isfinite(float(r[metric]))}

    a, b = by_repeat(policy), by_repeat(baseline)
    return [(a[k], b[k]) for k in sorted(a.keys() & b.keys())]


def compare(runs: Sequence[Mapping], policy: str, baseline: str, metric: str) -> dict | None:
    """One `comparisons` entry, None when no pair exists."""
    pairs = paired_values(runs, policy, baseline, metric)
    if not pairs:
        return None
    iv = log_mean_ci([floored(metric, p) / floored(metric, b) for p, b in pairs])
    return {"policy": policy, "baseline": baseline, "metric": metric, "ratio": iv.value,
            "ci_low": iv.ci_low, "ci_high": iv.ci_high, "pairs": iv.n}


def best_baseline(runs: Sequence[Mapping], baselines: Sequence[str], metric: str
                  ) -> str | None:
    """The baseline with the lowest geometric mean of `metric` over its kept runs (the strict
    rule: on each metric showar meets the baseline that is best on that metric)."""
    best, best_v = None, math.inf
    for b in baselines:
        vals = [floored(metric, float(r[metric])) for r in runs
                if r["policy"] == b and not r.get("excluded") and r.get(metric) is not None
                and math.isfinite(float(r[metric]))]
        if vals:
            v = log_mean_ci(vals).value
            if v < best_v:
                best, best_v = b, v
    return best


def comparisons(runs: Sequence[Mapping], baselines: Sequence[str] = DEFAULT_BASELINES,
                metrics: Sequence[str] = COMPARED_METRICS, judged: str = "showar") -> list[dict]:
    """Every non-baseline policy against every baseline that ran, per metric; and `judged`
    against the best baseline of each metric (`baseline` "best", `best_of` its name)."""
    pols = list(dict.fromkeys(r["policy"] for r in runs))
    present = [b for b in baselines if b in pols]
    out = []
    for p in (p for p in pols if p not in present):
        for b in present:
            for m in metrics:
                c = compare(runs, p, b, m)
                if c is not None:
                    out.append(c)
    if judged in pols and judged not in present:
        for m in metrics:
            b = best_baseline(runs, present, m)
            c = compare(runs, judged, b, m) if b else None
            if c is not None:
                out.append({**c, "baseline": BEST, "best_of": b})
    return out
