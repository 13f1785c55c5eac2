#!/usr/bin/env python3
"""Render the runqscale dashboard's main panels to a PNG, from the dashboard's own queries.

Reads deploy/grafana/runqscale-dashboard.json, substitutes the Grafana variables ($node,
$namespace, $pod, $container, $instance, $__rate_interval, ...) with concrete values, runs each
panel's PromQL against a Prometheus with /api/v1/query_range, and draws the panels with
matplotlib (Agg): what a user sees in Grafana, without Grafana.

    .venv/bin/python deploy/grafana/render_panels.py --prometheus http://127.0.0.1:9090 \\
        --range 10m --out docs/dashboard.png [--var container=/my/cgroup] [--var node=n1]

The helpers here (`dashboard_queries`, `substitute`, `label_values_query`) are also what
tests/test_dashboard_queries.py uses to run every expression against a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARD = os.path.join(HERE, "runqscale-dashboard.json")

# Values used for variables not given on the command line: "All" of a multi-value variable is
# its allValue (".*"); interval variables as Grafana computes them for a 1 s scrape interval.
DEFAULT_VARS = {
    "node": ".*", "namespace": ".*", "pod": ".*", "container": ".*", "instance": ".*",
    "__rate_interval": "5s", "__interval": "1s", "__range": "10m", "__range_s": "600",
}

# The panels drawn, in order, by dashboard title.
MAIN_PANELS = [
    "Run-queue latency p95 by container",
    "Run-queue latency p99 by container",
    "p95 heatmap: containers × time",
    "Run-queue wait distribution (selected containers)",
    "Throttled share (own CPU limit)",
    "CPU pressure and run-queue wait",
    "CPU usage and limit (cores)",
    "Replicas: actual and recommended",
    "CPU limit per pod: actual and recommended",
    "Agent CPU (cores): process and in-kernel BPF",
    "Agent memory (RSS)",
    "BPF cost per program run and events/s",
]

_VAR = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard and where it lives."""

    where: str  # "panel", "variable" or "annotation"
    title: str  # panel title, variable name or annotation name
    panel_type: str  # timeseries, heatmap, status-history, stat, table, query, annotation
    ref: str  # refId (panels), "" otherwise
    expr: str  # as written in the dashboard (Grafana variables not substituted)
    legend: str
    fmt: str  # "time_series", "heatmap", "table"


def load_dashboard(path: str = DASHBOARD) -> dict:
    with open(path) as f:
        return json.load(f)


def iter_panels(dash: dict) -> Iterator[dict]:
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])  # panels inside collapsed rows


def dashboard_queries(dash: dict) -> list[Query]:
    """Every expression: panel targets, query variables (label_values(...)) and annotations."""
    out = []
    for p in iter_panels(dash):
        for tgt in p.get("targets", []):
            if tgt.get("expr"):
                out.append(Query("panel", p["title"], p["type"], tgt.get("refId", ""), tgt["expr"],
                                 tgt.get("legendFormat", ""), tgt.get("format", "time_series")))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            out.append(Query("variable", v["name"], "query", "", q, "", "time_series"))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append(Query("annotation", a["name"], "annotation", "", a["expr"],
                             a.get("titleFormat", ""), "time_series"))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace $var, ${var}, ${var:fmt} and [[var]]; an unknown variable is an error."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"dashboard uses ${name}, which has no value")
        return values[name]

    return _VAR.sub(repl, expr)


def label_values_query(expr: str) -> tuple[str, str] | None:
    """`label_values(sel, label)` -> (PromQL returning one series per value, label)."""
    m = _LABEL_VALUES.match(expr)
    if not m:
        return None
    return f"group by ({m.group(2)}) ({m.group(1)})", m.group(2)


def promql(q: Query, values: dict[str, str]) -> str:
    """The PromQL Prometheus runs for `q`, variables substituted."""
    expr = substitute(q.expr, values)
    lv = label_values_query(expr)
    return lv[0] if lv else expr


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


# -- Prometheus HTTP API ----------------------------------------------------------------------

def api(base: str, path: str, params: dict[str, str], timeout: float = 30.0) -> dict:
    """GET an API endpoint; returns the decoded body (status "success" or "error")."""
    url = base.rstrip("/") + path + "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 400/422 carry a JSON error body
        body = e.read().decode(errors="replace")
        try:
            return json.loads(body)
        except ValueError:
            return {"status": "error", "errorType": str(e.code), "error": body}


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    body = api(base, "/api/v1/query_range",
               {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"})
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


# -- drawing ----------------------------------------------------------------------------------

def _short(s: str, n: int = 48) -> str:
    s = s.replace("/ ", " ").strip()
    return s if len(s) <= n else "…" + s[-(n - 1):]


def _scale(unit: str, peak: float) -> tuple[float, str]:
    """Multiplier and axis label for a Grafana unit, seconds in ms or µs by magnitude."""
    if unit == "s" and 0 < peak < 1e-3:
        return 1e6, "µs"
    return UNIT_SCALE.get(unit, (1.0, ""))


UNIT_SCALE = {"s": (1e3, "ms"), "percentunit": (100.0, "%"), "bytes": (1 / 2**20, "MiB"),
              "ops": (1.0, "/s"), "none": (1.0, ""), "short": (1.0, "")}


def _series(result: list[dict], fmt: str) -> list[tuple[str, list[float], list[float]]]:
    out = []
    for r in result:
        xs = [float(t) for t, _ in r["values"]]
        ys = [float(v) for _, v in r["values"]]
        out.append((legend(fmt, r["metric"]), xs, ys))
    return out


def draw(dash: dict, base: str, out: str, range_s: float, step: float,
         values: dict[str, str], title: str | None = None) -> dict[str, int]:
    """Draw MAIN_PANELS to `out`; returns the number of series each panel got."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    panels = {p["title"]: p for p in iter_panels(dash)}
    end = time.time()
    start = end - range_s
    ncols = 3
    nrows = math.ceil(len(MAIN_PANELS) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 3.6 * nrows), squeeze=False)
    fig.suptitle(title or dash["title"], fontsize=14, x=0.01, ha="left")
    counts: dict[str, int] = {}
    to_dt = np.vectorize(lambda t: matplotlib.dates.date2num(
        __import__("datetime").datetime.fromtimestamp(t)))
    # Scaler decisions (an annotation query) as vertical lines on the scaling panels.
    decisions: list[float] = []
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("name") == "Scaler decisions":
            res = query_range(base, substitute(a["expr"], values), start, end, step)
            decisions = sorted({float(t) for r in res for t, _ in r["values"]})

    for ax, name in zip(axes.flat, MAIN_PANELS, strict=False):
        p = panels[name]
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "none")
        ax.set_title(name, fontsize=10, loc="left")
        n = 0
        if p["type"] == "heatmap":
            tgt = p["targets"][0]
            res = query_range(base, substitute(tgt["expr"], values), start, end, step)
            n = len(res)
            if res:
                les = sorted(res, key=lambda r: float(r["metric"]["le"]))
                bounds = [float(r["metric"]["le"]) for r in les]
                xs = sorted({float(t) for r in les for t, _ in r["values"]})
                idx = {x: i for i, x in enumerate(xs)}
                cum = np.full((len(les), len(xs)), np.nan)
                for j, r in enumerate(les):
                    for t, v in r["values"]:
                        cum[j, idx[float(t)]] = float(v)
                dens = np.diff(np.vstack([np.zeros((1, len(xs))), cum]), axis=0)
                finite = [b for b in bounds if math.isfinite(b)]
                edges = [finite[0] / 2] + finite + [finite[-1] * 2]
                edges_ms = np.array(edges) * 1e3
                xe = to_dt(np.array(xs + [xs[-1] + step]))
                m = ax.pcolormesh(xe, edges_ms, np.ma.masked_invalid(np.where(dens > 0, dens,
                                                                              np.nan)),
                                  cmap="Oranges", shading="flat",
                                  norm=matplotlib.colors.PowerNorm(0.5))
                ax.set_yscale("log")
                ax.set_ylabel("wait (ms)")
                fig.colorbar(m, ax=ax, label="waits/s", pad=0.01)
        elif p["type"] == "status-history":
            tgt = p["targets"][0]
            res = query_range(base, substitute(tgt["expr"], values), start, end, step)
            rows = [s for s in _series(res, tgt.get("legendFormat", "")) if s[1]]
            n = len(rows)
            if rows:
                xs = sorted({x for _, sx, _ in rows for x in sx})
                idx = {x: i for i, x in enumerate(xs)}
                grid = np.full((len(rows), len(xs)), np.nan)
                for i, (_, sx, sy) in enumerate(rows):
                    for x, yv in zip(sx, sy, strict=True):
                        grid[i, idx[x]] = yv * 1e3
                cmap = matplotlib.colors.ListedColormap(["#73bf69", "#eab839", "#ff9830",
                                                         "#f2495c"])
                norm = matplotlib.colors.BoundaryNorm([0, 1, 5, 10, 1e9], cmap.N)
                xe = to_dt(np.array(xs + [xs[-1] + step]))
                m = ax.pcolormesh(xe, np.arange(len(rows) + 1), np.ma.masked_invalid(grid),
                                  cmap=cmap, norm=norm, shading="flat")
                ax.set_yticks(np.arange(len(rows)) + 0.5,
                              [_short(r[0], 32) for r in rows], fontsize=7)
                cb = fig.colorbar(m, ax=ax, pad=0.01, ticks=[0.5, 3, 7.5, 100])
                cb.ax.set_yticklabels(["<1 ms", "<5 ms", "<10 ms", "≥10 ms"], fontsize=7)
        else:
            # Query every target first: series on one axis share one scale (ms or µs).
            axes_data: dict[str, list] = {"left": [], "right": []}
            right_unit = unit
            for tgt in p["targets"]:
                res = query_range(base, substitute(tgt["expr"], values), start, end, step)
                ov = [o for o in p.get("fieldConfig", {}).get("overrides", [])
                      if o["matcher"].get("options") == tgt["refId"]]
                side = "right" if ov else "left"
                for prop in (ov[0]["properties"] if ov else []):
                    if prop["id"] == "unit":
                        right_unit = prop["value"]
                axes_data[side] += _series(res, tgt.get("legendFormat", ""))
            suffix = ""
            for side, series in axes_data.items():
                if not series:
                    continue
                side_unit = unit if side == "left" else right_unit
                peak = max((abs(v) for _, _, ys in series for v in ys if math.isfinite(v)),
                           default=0.0)
                sc, sfx = _scale(side_unit, peak)
                if side == "left":
                    target_ax, suffix = ax, sfx
                else:
                    target_ax = ax.twinx()
                    ax._twin = target_ax  # type: ignore[attr-defined]
                    target_ax.set_ylabel(sfx, fontsize=8)
                    target_ax.tick_params(labelsize=7)
                for lbl, xs, ys in series:
                    n += 1
                    style: dict = {"lw": 1.2}
                    if lbl == "target":
                        style.update(color="red", ls="--", lw=1.5)
                    elif side == "right":
                        style["ls"] = ":"
                    target_ax.plot(to_dt(np.array(xs)), np.array(ys) * sc,
                                   label=_short(lbl), **style)
            if suffix:
                ax.set_ylabel(suffix, fontsize=8)
            custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
            if custom.get("scaleDistribution", {}).get("type") == "log" and n:
                ax.set_yscale("log")
                plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
                    lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
            else:
                ax.set_ylim(bottom=0)
            if getattr(ax, "_twin", None) is not None:
                ax._twin.set_ylim(bottom=0)
            handles = []
            for a in (ax, getattr(ax, "_twin", None)):
                if a is not None:
                    h, lab = a.get_legend_handles_labels()
                    handles += list(zip(h, lab, strict=True))
            if handles:
                ax.legend([h for h, _ in handles[:8]], [lab for _, lab in handles[:8]],
                          fontsize=7, loc="upper left", framealpha=0.7)
        if name.startswith(("Replicas", "CPU limit per pod")):
            for d in decisions:
                ax.axvline(to_dt(d), color="purple", lw=0.8, alpha=0.6)
        if n == 0:
            ax.text(0.5, 0.5, "no data in this run\n(" + _needs(p) + ")", ha="center",
                    va="center", transform=ax.transAxes, fontsize=9, color="0.4")
        ax.set_xlim(to_dt(start), to_dt(end))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        counts[name] = n
    for ax in list(axes.flat)[len(MAIN_PANELS):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return counts


def _needs(p: dict) -> str:
    exprs = " ".join(t.get("expr", "") for t in p.get("targets", []))
    if "kube_" in exprs or "runqscale_scaler_" in exprs:
        return "needs kube-state-metrics and the runqscale scaler"
    if "pressure" in exprs:
        return "cpu.pressure: cgroup v2 only"
    return "no series for the selection"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    ap.add_argument("--dashboard", default=DASHBOARD)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "docs", "dashboard.png"))
    ap.add_argument("--range", dest="range_", default="10m",
                    help="how far back from now, e.g. 90s, 10m, 1h")
    ap.add_argument("--step", type=float, default=None, help="seconds (default: range/300, ≥1)")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                    help="a dashboard variable's value (a regex for node/namespace/pod/container)")
    ap.add_argument("--title", default=None)
    a = ap.parse_args(argv)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)", a.range_)
    if not m:
        ap.error(f"--range {a.range_!r}: write e.g. 90s, 10m or 1h")
    range_s = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
    values = dict(DEFAULT_VARS)
    values["__range"] = a.range_
    values["__range_s"] = str(int(range_s))
    for kv in a.var:
        if "=" not in kv:
            ap.error(f"--var {kv!r}: write NAME=VALUE, e.g. --var container=/my/cgroup")
        k, v = kv.split("=", 1)
        values[k.lstrip("$")] = v
    step = a.step or max(1.0, range_s / 300)
    counts = draw(load_dashboard(a.dashboard), a.prometheus, a.out, range_s, step, values, a.title)
    for name, n in counts.items():
        print(f"{n:4d} series  {name}")
    print(f"wrote {os.path.normpath(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
