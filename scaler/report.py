"""Summary of a recommendations log: a per-workload table and a PNG timeline (matplotlib, Agg)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runqscale import tables
from runqscale.scaler.model import ACTIONS, Recommendation


def _by_workload(recs: Sequence[Recommendation]) -> dict[str, list[Recommendation]]:
    by: dict[str, list[Recommendation]] = defaultdict(list)
    for r in recs:
        by[f"{r.workload.key} [{r.policy}]"].append(r)
    return {k: sorted(v, key=lambda r: r.ts) for k, v in sorted(by.items())}


def summarize(recs: Sequence[Recommendation]) -> dict[str, dict[str, Any]]:
    """Per workload and policy: decisions, action counts, replica range, last size, errors."""
    out: dict[str, dict[str, Any]] = {}
    for key, rs in _by_workload(recs).items():
        sized = [r for r in rs if r.action != "affinity"] or rs
        reps = [r.recommended.replicas for r in sized]
        counts = Counter(r.action for r in rs)
        last = sized[-1].recommended
        out[key] = {
            "decisions": len(rs),
            "actions": {a: counts.get(a, 0) for a in ACTIONS},
            "first_ts": rs[0].ts,
            "last_ts": rs[-1].ts,
            "replicas_min": min(reps),
            "replicas_max": max(reps),
            "replicas_mean": sum(reps) / len(reps),
            "last_recommended": last.to_json(),
            "errors": sum(1 for r in rs if r.error),
            "applied": sum(1 for r in rs if r.applied),
        }
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    t = tables.new(["workload [policy]", "dec", "out", "in", "rsz", "aff", "rep min/mean/max",
                    "last req/lim cores", "err"],
                   numeric=["dec", "out", "in", "rsz", "aff", "rep min/mean/max",
                            "last req/lim cores", "err"])
    for key, s in summary.items():
        a = s["actions"]
        last = s["last_recommended"]
        req = "-" if last["cpu_request_cores"] is None else f"{last['cpu_request_cores']:.3f}"
        lim = "-" if last["cpu_limit_cores"] is None else f"{last['cpu_limit_cores']:.3f}"
        tables.add_row(t, key, str(s["decisions"]), str(a["scale_out"]), str(a["scale_in"]),
                       str(a["resize"]), str(a["affinity"]),
                       f"{s['replicas_min']}/{s['replicas_mean']:.1f}/{s['replicas_max']}",
                       f"{req}/{lim}", str(s["errors"]))
    return tables.render(t)


def plot(recs: Sequence[Recommendation], path: Path) -> Path:
    """Timeline per workload: replicas (current, recommended), CPU request, run-queue p95."""
    try:
        import matplotlib
    except ImportError:  # the `plot` extra
        raise RuntimeError(
            "the PNG timeline needs matplotlib: pip install 'runqscale[plot]'"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _by_workload([r for r in recs if r.action != "affinity"] or list(recs))
    n = max(1, len(groups))
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.8 * n), squeeze=False, sharex=True)
    t0 = min(r.ts for r in recs)
    for ax, (key, rs) in zip(axes[:, 0], groups.items(), strict=False):
        t = [r.ts - t0 for r in rs]
        ax.step(t, [r.current.replicas for r in rs], where="post", label="replicas (current)")
        ax.step(
            t,
            [r.recommended.replicas for r in rs],
            where="post",
            linestyle="--",
            label="replicas (recommended)",
        )
        req = [r.recommended.cpu_request_cores for r in rs]
        if any(v is not None for v in req):
            ax.step(
                t,
                [float("nan") if v is None else v for v in req],
                where="post",
                label="CPU request, cores (rec.)",
            )
        ax.set_ylabel("replicas / cores")
        ax.set_title(key, fontsize=9)
        p95 = [r.signals.get("runq_p95_seconds") for r in rs]
        if any(v is not None for v in p95):
            ax2 = ax.twinx()
            ax2.plot(
                t,
                [float("nan") if v is None else v * 1000 for v in p95],
                color="tab:red",
                alpha=0.6,
                linewidth=0.8,
                label="run-queue p95 (ms)",
            )
            ax2.set_ylabel("run-queue p95, ms", color="tab:red")
        ax.legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel(f"seconds since {t0:.0f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
