"""The one-screen view of a comparison's `report.json` (design.md's contract): a row per policy,
then the paired ratios when the report has them. What `validate` prints at the end of a run and
`runqscale validate summary DIR/report.json` prints for a past one (`make demo` ends with it)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runqscale import tables
from runqscale.agent.errors import fail
from runqscale.validation.capacity import load_line
from runqscale.validation.report import RUN_METRICS, summarize

# (report key, header, scale to the unit in the header, decimals); p50 and the penalty's terms
# stay in report.json: the screen keeps what decides between policies
COLUMNS = (("p95_seconds", "p95 ms", 1e3, 1), ("p99_seconds", "p99 ms", 1e3, 1),
           ("slo_violation_ratio", "SLO %", 100, 1), ("failed", "failed", 1, 0),
           ("cpu_core_seconds_allocated", "alloc core-s", 1, 0),
           ("cpu_core_seconds_used", "used core-s", 1, 0), ("mean_replicas", "replicas", 1, 2),
           ("decisions", "decisions", 1, 0), ("penalty", "penalty", 1, 2))


def _mean(v: dict | None, k: float, d: int) -> str:
    return "-" if not v or v.get("mean") is None else f"{v['mean'] * k:.{d}f}"


def _range(v: dict | None, k: float, d: int) -> str:
    """`min–max` over the repeats, empty when they agree or the metric is missing."""
    if not v or v.get("min") is None or math.isclose(v["min"], v["max"]):
        return ""
    return f"{v['min'] * k:.{d}f}–{v['max'] * k:.{d}f}"


def caption(report: dict) -> str:
    """Which trace segment, at what warp and SLO: one line above the table."""
    trace = report.get("trace") or {}
    seg = trace.get("segment") or {}
    slo = report.get("slo_seconds")
    return (f"{os.path.basename(str(trace.get('file', '?')))} "
            f"{seg.get('start', '')} – {seg.get('end', '')}, "
            f"warp {trace.get('time_warp') or 0:.0f}x, scale {trace.get('scale') or 0:.3g}"
            + (f", SLO {slo * 1e3:.0f} ms" if slo else ""))


def policy_table(report: dict) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    t.add_column("policy", no_wrap=True)
    for _, head, _, _ in COLUMNS:
        t.add_column(head, justify="right", no_wrap=True)
    excluded = [r for r in report.get("runs") or [] if isinstance(r, dict) and r.get("excluded")]
    # the same means the report keeps for kept runs (missing metrics read as None)
    excluded_stats = summarize([{"policy": str(r.get("policy")),
                                 **{m: r.get(m) for m in RUN_METRICS}} for r in excluded])
    for pol, m in report["summary"].items():
        tables.add_row(t, pol, *(_mean(m.get(key), k, d) for key, _, k, d in COLUMNS))
        spread = [_range(m.get(key), k, d) for key, _, k, d in COLUMNS]
        if any(spread):
            tables.add_row(t, "  min–max", *spread, style="dim")
        if pol in excluded_stats:
            # what the excluded runs measured: shown, never counted (a demo on a disturbed
            # machine would otherwise print a row of dashes)
            n = sum(str(r.get("policy")) == pol for r in excluded)
            tables.add_row(t, f"  excluded ({n})",
                           *(_mean(excluded_stats[pol].get(key), k, d)
                             for key, _, k, d in COLUMNS), style="dim")
    return t


def _nth(repeat: object) -> str:
    """A repeat index as the progress lines count runs (from 1); `?` in a hand-edited report."""
    return str(repeat + 1) if isinstance(repeat, int) else "?"


def exclusions_line(report: dict) -> str | None:
    """Which runs the disturbance rule left out, and why: one line under the table."""
    items = [f"{e.get('policy')} #{_nth(e.get('repeat'))} {e.get('reason')}"
             for e in report.get("exclusions") or [] if isinstance(e, dict)]
    if not items:
        return None
    return ("excluded by the disturbance rule fixed before the runs (measured, shown dim, not "
            "in the means or ratios): " + "; ".join(items))


def comparison_table(report: dict) -> Table | None:
    rows = report.get("comparisons") or []
    if not rows:
        return None
    t = Table(title="paired ratios (policy / baseline, 95 % CI)", box=box.SIMPLE_HEAD,
              show_edge=False, pad_edge=False)
    for head in ("policy", "baseline", "metric", "ratio", "95 % CI", "pairs"):
        t.add_column(head, justify="right" if head in ("ratio", "95 % CI", "pairs") else "left")
    for c in rows:
        ci = ("-" if c.get("ci_low") is None or c.get("ci_high") is None
              else f"{c['ci_low']:.2f}–{c['ci_high']:.2f}")
        ratio = "-" if c.get("ratio") is None else f"{c['ratio']:.2f}"
        tables.add_row(t, str(c["policy"]), str(c["baseline"]), str(c["metric"]), ratio, ci,
                       str(c.get("pairs", "")))
    return t


def print_summary(report: dict, console: Console | None = None) -> None:
    console = console or tables.console()
    console.print(Text(caption(report)))
    load = report.get("load") or {}
    line = load_line(load.get("realised"), bool(load.get("capacity_given")))
    if line:
        console.print(Text(line))
    console.print(policy_table(report))
    excluded = exclusions_line(report)
    if excluded:
        console.print(Text(excluded))
    comp = comparison_table(report)
    if comp is not None:
        console.print()
        console.print(comp)


def load_report(path: str) -> dict[str, Any]:
    """A report.json, or a one-line usage error naming the file and what is wrong."""
    try:
        with open(path) as f:
            report = json.load(f)
    except FileNotFoundError:
        fail(f"{path}: no such report; pass the report.json a `runqscale validate --out DIR` "
             "run wrote (DIR/report.json)", usage=True)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        fail(f"{path}: not JSON ({e}); pass a report.json written by runqscale validate",
             usage=True)
    if not isinstance(report, dict) or not isinstance(report.get("summary"), dict):
        fail(f"{path}: no `summary` object; pass a report.json written by runqscale validate",
             usage=True)
    return report


@click.command("summary")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
def summary(reports: tuple[str, ...]) -> None:
    """One table per report.json: each policy's latency, SLO violations, CPU, replicas,
    decisions and penalty (mean [min,max] over repeats), then the paired ratios.

    \b
    Examples:
      runqscale validate summary out/demo/report.json
      runqscale validate summary out/demo/report.json out/dsb/report.json
    """
    loaded = [(p, load_report(p)) for p in reports]
    out = tables.console()
    for path, report in loaded:
        out.print(Text(path, style="bold"))
        print_summary(report, out)
