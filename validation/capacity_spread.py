"""How far apart does `validate --app deathstarbench` measure the capacity on this machine?

    python -m runqscale.validation.capacity_spread --invocations 5 --out spread.json

Starts the emulated social network once and measures its starting deployment's capacity as
each `validate` invocation does (dsb_compare.measure_dsb_capacity: the stores reseeded before
each light/loaded pair, `--capacity-repeats` pairs, the median kept), N times in a row, the
deployment reset before each, invocation k with the seeds of `validate --seed k`. Prints and
writes every pair's reading and every median, and how many times apart each set is: the single
pairs are what one invocation measured before stop 48, the medians what it measures now. About
65 s per invocation at the defaults. It does not cover what changes between separate starts
of the social network minutes apart.
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
    ap.add_argument("--invocations", type=int, default=5)
    ap.add_argument("--capacity-repeats", type=int, default=capmod.CAPACITY_REPEATS)
    ap.add_argument("--out", required=True, help="write the JSON result here")
    args = ap.parse_args(argv)
    if args.invocations < 1 or args.capacity_repeats < 1:
        ap.error("--invocations and --capacity-repeats must be 1 or more")

    from runqscale.probes.backends import open_probe
    from runqscale.validation.dsb_compare import DsbCompareConfig

    probe, mounts, _ = open_probe("auto", "auto", bpf_stats=False)
    try:
        rows = _measure(probe, mounts, args.invocations, args.capacity_repeats)
    finally:
        probe.close()
    pairs = spread([x for r in rows for x in r["pairs_rps"]])
    medians = spread([r["median_rps"] for r in rows])
    result = {"app": "deathstarbench", "capacity_repeats": args.capacity_repeats,
              "probe_rate_rps": DsbCompareConfig.probe_rate_rps,
              "probe_seconds": DsbCompareConfig.probe_seconds,
              "invocations": rows, "single_pairs": pairs, "medians": medians}
    print(f"single pairs {pairs['min_rps']:.1f}-{pairs['max_rps']:.1f} req/s "
          f"({pairs['times_apart']:.2f}x apart, {pairs['n']}); medians "
          f"{medians['min_rps']:.1f}-{medians['max_rps']:.1f} "
          f"({medians['times_apart']:.2f}x apart, {medians['n']})")
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return 0


def _measure(probe: Any, mounts: Any, invocations: int, repeats: int) -> list[dict]:
    """One social network, its capacity measured `invocations` times as `validate` would."""
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
            rows.append({"invocation": k, "median_rps": cap["rps"],
                         "pairs_rps": cap["repeats_rps"], "failures": cap["failures"],
                         "bottleneck": cap["bottleneck"], "seconds": time.monotonic() - t0})
            print(f"invocation {k + 1}/{invocations}: {cap['rps']:.1f} req/s, the median "
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
