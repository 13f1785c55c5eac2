"""How far apart does `validate --app deathstarbench` measure the capacity on this machine?

    python -m runqscale.validation.capacity_spread --invocations 5 --out spread.json
    python -m runqscale.validation.capacity_spread --starts 3 --invocations 2 --out spread.json

Starts the emulated social network and measures its starting deployment's capacity as each
`validate` invocation does (dsb_compare.measure_dsb_capacity: the stores reseeded before each
light/loaded pair, `--capacity-repeats` pairs, the median kept), N times in a row, the
deployment reset before each, invocation k with the seeds of `validate --seed k`; with
`--starts`, that many times over, each in a social network started anew (the same seeds), as
separate `validate` invocations minutes apart each start their own. Prints and writes every
pair's reading and every median, and how many times apart each set is: the single pairs are
what one invocation measured before stop 48, the medians what it measures now, and the first
median of each start what separate invocations measure. About 65 s per invocation at the
defaults, plus about 10 s per start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any

from runqscale import termination
from runqscale.data import REED98
from runqscale.validation import capacity as capmod


def spread(reads: list[float]) -> dict[str, float | int]:
    """The lowest and highest reading and how many times apart they are."""
    if not reads:
        raise ValueError("no capacity reading")
    lo, hi = min(reads), max(reads)
    return {"n": len(reads), "min_rps": lo, "max_rps": hi, "times_apart": hi / lo}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--invocations", type=int, default=5, help="measurements per start")
    ap.add_argument("--starts", type=int, default=1,
                    help="start the social network this many times, in turn")
    ap.add_argument("--capacity-repeats", type=int, default=capmod.CAPACITY_REPEATS)
    ap.add_argument("--out", required=True, help="write the JSON result here")
    args = ap.parse_args(argv)
    if min(args.invocations, args.capacity_repeats, args.starts) < 1:
        ap.error("--invocations, --capacity-repeats and --starts must be 1 or more")

    from runqscale.probes.backends import open_probe
    from runqscale.validation.dsb_compare import DsbCompareConfig

    probe, mounts, _ = open_probe("auto", "auto", bpf_stats=False)
    try:
        rows = [row for start in range(args.starts) for row in
                _measure(probe, mounts, args.invocations, args.capacity_repeats, start,
                         args.starts)]
    finally:
        probe.close()
    pairs = spread([x for r in rows for x in r["pairs_rps"]])
    medians = spread([r["median_rps"] for r in rows])
    result = {"app": "deathstarbench", "capacity_repeats": args.capacity_repeats,
              "probe_rate_rps": DsbCompareConfig.probe_rate_rps,
              "probe_seconds": DsbCompareConfig.probe_seconds, "starts": args.starts,
              "invocations": rows, "single_pairs": pairs, "medians": medians}
    line = (f"single pairs {pairs['min_rps']:.1f}-{pairs['max_rps']:.1f} req/s "
            f"({pairs['times_apart']:.2f}x apart, {pairs['n']}); medians "
            f"{medians['min_rps']:.1f}-{medians['max_rps']:.1f} "
            f"({medians['times_apart']:.2f}x apart, {medians['n']})")
    if args.starts > 1:
        # what separate invocations of `validate`, each starting its own network, measure
        fresh = spread([r["median_rps"] for r in rows if r["invocation"] == 0])
        result["first_median_of_each_start"] = fresh
        line += (f"; first median of each start {fresh['min_rps']:.1f}-{fresh['max_rps']:.1f} "
                 f"({fresh['times_apart']:.2f}x apart, {fresh['n']})")
    print(line)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return 0


def _measure(probe: Any, mounts: Any, invocations: int, repeats: int, start: int = 0,
             starts: int = 1) -> list[dict]:
    """One social network (start number `start`), its capacity measured `invocations` times as
    `validate` would."""
    from runqscale.deathstarbench.emulation.cluster import Cluster
    from runqscale.deathstarbench.emulation.socialgraph import load_edges
    from runqscale.validation.dsb_compare import (
        DsbCompareConfig,
        measure_dsb_capacity,
        starting_allocation,
    )

    cfg = DsbCompareConfig(trace_path="", graph_path=str(REED98), policies=(), duration_s=0,
                           repeats=0, out_dir="", capacity_repeats=repeats)
    alloc = starting_allocation(cfg)
    rows: list[dict] = []
    with Cluster(probe.hierarchy, mounts, cfg.cluster, load_edges(str(REED98))) as c:
        for k in range(invocations):
            c.reset()  # the starting deployment, as each invocation begins
            t0 = time.monotonic()
            cap = measure_dsb_capacity(c, replace(cfg, seed=k), alloc, lambda _m: None)
            rows.append({"start": start, "invocation": k, "median_rps": cap["rps"],
                         "pairs_rps": cap["repeats_rps"], "failures": cap["failures"],
                         "bottleneck": cap["bottleneck"], "seconds": time.monotonic() - t0})
            where = f"start {start + 1}/{starts}, " if starts > 1 else ""
            print(f"{where}invocation {k + 1}/{invocations}: {cap['rps']:.1f} req/s, the median "
                  f"of {', '.join(f'{x:.1f}' for x in cap['repeats_rps'])} "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
    return rows


if __name__ == "__main__":
    termination.terminate_as_interrupt()  # SIGTERM stops the services as Ctrl-C does
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as e:
        code, what = termination.stopped(e)
        print(f"python -m runqscale.validation.capacity_spread: {what}", file=sys.stderr)
        raise SystemExit(code) from None
