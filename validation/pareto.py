"""Cost vs p99 per policy across knob settings: one point per (policy, knob setting) from the
reports of a sweep, with 95 % intervals, and which points are on the Pareto front (no other point
has both lower allocated core-seconds and lower p99).

A point's value is the geometric mean over its kept runs (excluded runs left out) and its bars
the t interval of the mean log (runqscale.intervals.log_mean_ci). The knob is read from
the report's `fairness.targets`: showar's margin (k sigma) and its run-queue p95 target when that
is not the library's (reports from before the margin was a knob: the target alone), the CPU
utilisation target for the HPA family; other policies have no swept knob ("default").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from runqscale.intervals import Interval, log_mean_ci
from runqscale.scaler.model import ScalerConfig
from runqscale.validation import stats

COST = "cpu_core_seconds_allocated"
LATENCY = "p99_seconds"


def knob(policy: str, report: Mapping) -> tuple[str, float | None]:
    """(label, value) of the policy's swept knob in this report."""
    t = report.get("fairness", {}).get("targets", {})
    if policy == "showar" and t.get("showar_margin_sigma") is not None:
        k, ms = float(t["showar_margin_sigma"]), t.get("runq_p95_seconds")
        label = f"{k:g}σ"
        if ms is not None and float(ms) != ScalerConfig.target_runq_p95_seconds:
            label += f", {float(ms) * 1e3:g} ms"
        if t.get("showar_replica_max_cores") is not None:  # not the same point as uncapped
            label += f", ≤{float(t['showar_replica_max_cores']):g} core"
        return label, k
    if policy == "showar" and t.get("runq_p95_seconds") is not None:
        v = float(t["runq_p95_seconds"])
        return f"{v * 1e3:g} ms", v
    if policy in ("hpa", "phpa-knn", "phpa-linear") and t.get("cpu_utilization") is not None:
        v = float(t["cpu_utilization"])
        return f"{v:.0%}", v
    return "default", None


def _iv(runs: list[Mapping], metric: str) -> Interval | None:
    vals = [stats.floored(metric, float(r[metric])) for r in runs
            if r.get(metric) is not None and math.isfinite(float(r[metric]))]
    return log_mean_ci(vals) if vals else None


def points(reports: Iterable[Mapping]) -> list[dict]:
    """One point per (policy, knob) over every report (settings repeated across reports pool
    their runs)."""
    pooled: dict[tuple[str, str], dict] = {}
    for rep in reports:
        for r in rep.get("runs", []):
            if r.get("excluded"):
                continue
            label, value = knob(r["policy"], rep)
            p = pooled.setdefault((r["policy"], label), {"policy": r["policy"], "knob": label,
                                                          "knob_value": value, "runs": []})
            p["runs"].append(r)
    out = []
    for p in pooled.values():
        cost, lat = _iv(p["runs"], COST), _iv(p["runs"], LATENCY)
        if cost is None or lat is None:
            continue
        out.append({"policy": p["policy"], "knob": p["knob"], "knob_value": p["knob_value"],
                    "runs": len(p["runs"]), COST: cost.value, f"{COST}_ci": [cost.ci_low,
                                                                            cost.ci_high],
                    LATENCY: lat.value, f"{LATENCY}_ci": [lat.ci_low, lat.ci_high]})
    front = pareto_front([(p[COST], p[LATENCY]) for p in out])
    for i, p in enumerate(out):
        p["pareto"] = i in front
    return sorted(out, key=lambda p: (p["policy"], p["knob_value"] or 0.0))


def pareto_front(xy: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point dominates (<= on both, < on one)."""
    front = set()
    for i, (a, b) in enumerate(xy):
        if not any((c <= a and d <= b) and (c < a or d < b) for j, (c, d) in enumerate(xy)
                   if j != i):
            front.add(i)
    return front


def plot(path: str, pts: list[dict], title: str) -> None:
    """Allocated core-seconds vs p99, one line per policy through its knob settings, CI bars;
    points on the overall Pareto front ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    for i, pol in enumerate(dict.fromkeys(p["policy"] for p in pts)):
        mine = [p for p in pts if p["policy"] == pol]
        x = [p[LATENCY] * 1e3 for p in mine]
        y = [p[COST] for p in mine]

        def bars(key: str, vals: list[float], k: float, mine: list[dict] = mine) -> list:
            # no interval (one run): a zero-width bar
            lo = [0.0 if p[key][0] is None else v - p[key][0] * k
                  for v, p in zip(vals, mine, strict=True)]
            hi = [0.0 if p[key][1] is None else p[key][1] * k - v
                  for v, p in zip(vals, mine, strict=True)]
            return [lo, hi]

        c = f"C{i % 10}"
        ax.errorbar(x, y, xerr=bars(f"{LATENCY}_ci", x, 1e3), yerr=bars(f"{COST}_ci", y, 1.0),
                    fmt="-o", color=c, capsize=3, label=pol)
        for p, xi, yi in zip(mine, x, y, strict=True):
            ax.annotate(p["knob"], (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=c)
            if p["pareto"]:
                ax.scatter([xi], [yi], s=160, facecolors="none", edgecolors="k", lw=0.8)
    # limits from the points, not the bars: with 2 runs a t interval spans decades
    xs = [p[LATENCY] * 1e3 for p in pts] or [1.0]
    ys = [p[COST] for p in pts] or [1.0]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(min(xs) / 3, max(xs) * 3)
    ax.set_ylim(min(ys) / 2, max(ys) * 2)
    ax.set_xlabel("p99 response time (ms, geometric mean, 95% CI)")
    ax.set_ylabel("CPU core-seconds allocated (95% CI)")
    ax.set_title(title + "\n(ringed: on the Pareto front; lower-left is better)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
