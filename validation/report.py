"""`report.json` (design.md's machine-readable contract, exactly those keys) and the PNG plots.

Beyond the contract's keys (fields are added, never renamed): per run the host disturbance and
the exclusion reason, `exclusions`, and `load`/`fairness` blocks. Timelines, actuation delays,
late sends and the scaling in words go to `details.json` beside it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runqscale.validation import stats
from runqscale.validation.scoring import BATCH_SECONDS, RunScore

RUN_METRICS = ("requests", "failed", "p50_seconds", "p95_seconds", "p99_seconds",
               "slo_violation_ratio", "cpu_core_seconds_requested", "cpu_core_seconds_allocated",
               "cpu_core_seconds_used", "mean_replicas", "decisions", "penalty")


@dataclass(frozen=True)
class TraceInfo:
    file: str
    segment: dict  # {"start", "end", "trace_seconds"}
    scale: float  # real requests/s per trace request/s
    time_warp: float  # trace seconds per real second


def trace_info(path: str, trace: object, seg: object) -> TraceInfo:
    """The report's `trace` block for the replayed segment `seg` of `trace` (traces.Trace,
    traces.Segment)."""
    return TraceInfo(
        file=path,
        segment={"start": trace.label(seg.start_s),  # type: ignore[attr-defined]
                 "end": trace.label(seg.start_s + seg.trace_seconds),  # type: ignore[attr-defined]
                 "trace_seconds": seg.trace_seconds},  # type: ignore[attr-defined]
        scale=seg.scale, time_warp=seg.time_warp)  # type: ignore[attr-defined]


def run_entry(policy: str, repeat: int, s: RunScore, decisions: int) -> dict:
    return {
        "policy": policy,
        "repeat": repeat,
        "requests": s.requests,
        "failed": s.failed,
        "p50_seconds": s.p50_seconds,
        "p95_seconds": s.p95_seconds,
        "p99_seconds": s.p99_seconds,
        "slo_violation_ratio": s.slo_violation_ratio,
        "cpu_core_seconds_requested": s.cpu_core_seconds_requested,
        "cpu_core_seconds_allocated": s.cpu_core_seconds_allocated,
        "cpu_core_seconds_used": s.cpu_core_seconds_used,
        "mean_replicas": s.mean_replicas,
        "decisions": decisions,
        "penalty": s.penalty.total,
        "penalty_terms": {"latency": s.penalty.latency, "failures": s.penalty.failures,
                          "replicas": s.penalty.replicas},
    }


def summarize(runs: Sequence[dict]) -> dict:
    """Per policy, per metric: mean, min, max over the repeats kept (excluded runs and None
    values skipped)."""
    out: dict[str, dict] = {}
    for pol in dict.fromkeys(r["policy"] for r in runs):
        mine = [r for r in runs if r["policy"] == pol and not r.get("excluded")]
        out[pol] = {}
        for m in RUN_METRICS:
            vals = [float(r[m]) for r in mine if r[m] is not None and math.isfinite(r[m])]
            out[pol][m] = ({"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}
                           if vals else {"mean": None, "min": None, "max": None})
    return out


def build_report(trace: TraceInfo, slo_seconds: float, runs: Sequence[dict],
                 baselines: Sequence[str] = stats.DEFAULT_BASELINES,
                 extra: dict | None = None) -> dict:
    """The contract's keys, `comparisons` (runqscale.validation.stats), `exclusions` (every run
    the disturbance rule left out, with the reason), then `extra` (load, capacity, fairness)."""
    return {
        "trace": {"file": trace.file, "segment": trace.segment, "scale": trace.scale,
                  "time_warp": trace.time_warp},
        "slo_seconds": slo_seconds,
        "runs": list(runs),
        "summary": summarize(runs),
        "comparisons": stats.comparisons(runs, baselines),
        "exclusions": [{"policy": r["policy"], "repeat": r["repeat"], "reason": r["excluded"]}
                       for r in runs if r.get("excluded")],
        **(extra or {}),
    }


def write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def latency_series(scheduled: np.ndarray, latency: np.ndarray, ok: np.ndarray,
                   bin_s: float = BATCH_SECONDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin start, p50, p99) of successful requests per bin (NaN where none)."""
    if scheduled.size == 0:
        z = np.zeros(0)
        return z, z, z
    b = (scheduled // bin_s).astype(int)
    nb = int(b.max()) + 1
    p50, p99 = np.full(nb, np.nan), np.full(nb, np.nan)
    good = ok & np.isfinite(latency)
    for i in range(nb):
        lat = latency[good & (b == i)]
        if lat.size:
            p50[i], p99[i] = np.percentile(lat, 50), np.percentile(lat, 99)
    return np.arange(nb) * bin_s, p50, p99


def plot_timelines(path: str, series: dict[str, dict], slo_seconds: float, title: str) -> None:
    """`series[policy]` = {"t", "load", "replicas", "allocated", "used", "lat_t", "p50", "p99"}
    (the first repeat of each policy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (pol, s) in enumerate(series.items()):
        c = colors[i % len(colors)]
        if i == 0:
            axes[0].plot(s["t"], s["load"], color="0.3", lw=1, label="requests sent/s")
        axes[1].step(s["t"], s["replicas"], where="post", color=c, label=pol)
        axes[2].step(s["t"], s["allocated"], where="post", color=c, label=f"{pol} allocated")
        axes[2].plot(s["t"], s["used"], color=c, lw=0.8, ls=":", label=f"{pol} used")
        axes[3].plot(s["lat_t"], s["p99"], color=c, label=f"{pol} p99")
        axes[3].plot(s["lat_t"], s["p50"], color=c, ls="--", lw=0.8, label=f"{pol} p50")
    axes[3].axhline(slo_seconds, color="k", lw=0.8, ls=":", label="SLO")
    axes[0].set_ylabel("load (req/s)")
    axes[1].set_ylabel("replicas")
    axes[2].set_ylabel("CPU (cores)")
    axes[3].set_ylabel("response time (s)")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("seconds into the run")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=3, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scores(path: str, summary: dict, title: str) -> None:
    """Bars of the mean per policy with min–max whiskers: penalty, core-seconds, p99, SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("penalty", "penalty (lower is better)"),
               ("cpu_core_seconds_allocated", "CPU core-seconds allocated"),
               ("p99_seconds", "p99 response time (s)"),
               ("slo_violation_ratio", "SLO violation ratio")]
    pols = list(summary)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4))
    for ax, (m, label) in zip(axes, metrics, strict=True):
        mean = [summary[p][m]["mean"] or 0.0 for p in pols]
        lo = [mean[i] - (summary[p][m]["min"] or 0.0) for i, p in enumerate(pols)]
        hi = [(summary[p][m]["max"] or 0.0) - mean[i] for i, p in enumerate(pols)]
        ax.bar(pols, mean, yerr=[lo, hi], capsize=4, color="C0", alpha=0.8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
