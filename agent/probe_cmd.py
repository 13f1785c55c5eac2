"""`runqscale probe`: the first thing a person runs on a node — a live per-container table."""

from __future__ import annotations

import json
import time

import click
from rich.console import Console

from runqscale import tables
from runqscale.agent.errors import fail
from runqscale.params import DURATION
from runqscale.probes.backends import BACKENDS, HIERARCHIES, open_probe
from runqscale.probes.errors import ProbeError


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.3f}"


def _table(rows: list[dict], interval: float, out: Console) -> None:
    t = tables.new(["CGROUP", "EVENTS/S", "P50 ms", "P95 ms", "P99 ms", "WAIT s/s", "THROTTLED"],
                   numeric=["EVENTS/S", "P50 ms", "P95 ms", "P99 ms", "WAIT s/s", "THROTTLED"])
    for r in rows:
        thr = "-" if r["throttled_ratio"] is None else f"{r['throttled_ratio'] * 100:.1f}%"
        path = r["cgroup"] if len(r["cgroup"]) <= 48 else "…" + r["cgroup"][-47:]
        tables.add_row(t, path, f"{r['events'] / interval:.0f}", _ms(r["p50_seconds"]),
                       _ms(r["p95_seconds"]), _ms(r["p99_seconds"]),
                       f"{r['wait_seconds'] / interval:.3f}", thr)
    out.print(t)
    out.print()
    out.file.flush()


@click.command("probe")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="core: CO-RE object via libbpf; bcc: compiled at start; auto: core, else bcc.")
@click.option("--hierarchy", type=click.Choice(HIERARCHIES), default="auto", show_default=True,
              help="Cgroup hierarchy to attribute to: v1 `cpu`, cgroup2, or auto (v1 cpu if "
                   "mounted, as on hybrid nodes).")
@click.option("--interval", type=DURATION, default="1s", show_default=True,
              help="Reporting interval, e.g. 500ms, 1s, 2.5s.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Stop after this many intervals (default: run until interrupted).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per interval (stable).")
@click.option("--cgroup", "cgroups", multiple=True, metavar="PATH",
              help="Only this cgroup (and its children), path relative to the hierarchy root. "
                   "Repeatable.")
@click.option("--min-events", type=click.IntRange(min=0), default=1, show_default=True,
              help="Hide cgroups with fewer waits than this in an interval (table only).")
def probe(backend: str, hierarchy: str, interval: float, count: int | None, as_json: bool,
          cgroups: tuple[str, ...], min_events: int) -> None:
    """Per-container run-queue latency, live: p50/p95/p99, events/s, throttled share.

    \b
    Examples:
      runqscale probe                          # table every second until Ctrl-C
      runqscale probe --json --count 5         # five JSON objects, one per interval
      runqscale probe --cgroup /kubepods.slice --interval 2s
    """
    from runqscale.agent.sampler import Sampler
    from runqscale.probes.cgroupfs import CgroupMounts

    mounts = CgroupMounts.read()
    try:
        hier, root = mounts.choose(hierarchy)
    except ProbeError as e:
        fail(str(e), usage=True)
    missing = [c for c in cgroups if not _exists(root, c)]
    if missing:
        fail(f"--cgroup {missing[0]}: no such cgroup under {root}; give a path relative to "
             "that root (e.g. /kubepods.slice)", usage=True)
    try:
        p, mounts, root = open_probe(backend, hierarchy, mounts=mounts, bpf_stats=False)
    except ProbeError as e:
        fail(str(e))
    sampler = Sampler(p, mounts, root, only=list(cgroups) or None)
    people = tables.console()
    sampler.sample()
    n = 0
    try:
        while count is None or n < count:
            time.sleep(interval)
            iv = sampler.sample()
            rows = [_row(s) for s in iv.cgroups if s.events >= (0 if as_json else min_events)]
            rows.sort(key=lambda r: -(r["p95_seconds"] or 0))
            if as_json:
                print(json.dumps({"ts": round(time.time(), 3), "backend": p.backend,
                                  "interval_seconds": round(iv.seconds, 4),
                                  "containers": rows}), flush=True)
            else:
                _table(rows, iv.seconds or interval, people)
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        p.close()


def _exists(root: str, rel: str) -> bool:
    import os

    return os.path.isdir(os.path.join(root, rel.lstrip("/")))


def _row(s) -> dict:
    # Identity columns: outside Kubernetes namespace/pod/container are null (the agent fills them).
    return {
        "cgroup": s.path, "namespace": None, "pod": None, "container": None,
        "events": s.events, "p50_seconds": s.quantile(0.50), "p95_seconds": s.quantile(0.95),
        "p99_seconds": s.quantile(0.99), "wait_seconds": s.wait_seconds,
        "throttled_ratio": s.throttled_ratio,
        # Added field: wait_seconds split by what held the CPU during the waits (probes), or null.
        "wait_seconds_by_holder": s.delta.held_seconds(),
    }
