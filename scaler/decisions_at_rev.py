"""Are showar's decisions unchanged by a change? The same closed loop replayed with showar as it
was at a git revision and as it is now, every decision compared byte for byte.

    python -m runqscale.scaler.decisions_at_rev HEAD~1            # against the checkout
    python -m runqscale.scaler.decisions_at_rev 4f14d3a d9fc383 --workloads 120 --steps 200

The loop: each workload's load follows a slow wave with spikes; its usage is capped by replicas x
limit, throttling, run-queue wait (split by holder for some) and request rate follow from it;
any sample of any series may be missing. Every 3 s showar decides on the last 300 s, sampled
every second (`--spacing`: sparser, as the decision bench's 3 s or a 15 s scrape), and its
recommendation becomes the current size (a scale-out's replicas turn ready after 0-7 s). Six
parameter sets (signal, PID gains, error form, replica maximum, no vertical, no start-up
accounting) cover showar's branches. Each revision runs in its own process with that revision's
whole package on PYTHONPATH (`runqscale/revtree.py`), so a change to the signal window counts
too. Exit 0 when every decision (recommendation and state, as repr) is identical, 1 at the
first difference, which is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator

TOOL = "runqscale.scaler.decisions_at_rev"


def closed_loop(workloads: int, steps: int, spacing: int = 1) -> Iterator[str]:
    """One line per decision: workload, step, repr(recommendation), repr(state). The windows
    hold one sample every `spacing` seconds (1: the agent's cadence), the last at the decision."""
    import numpy as np

    from runqscale.scaler.model import (
        SERIES_FIELDS,
        CurrentState,
        ScalerConfig,
        SignalWindow,
        WorkloadRef,
    )
    from runqscale.scaler.policies import showar

    known = {f.name for f in dataclasses.fields(showar.Params)}

    def params(**kw: object) -> object:  # a revision before a knob simply lacks that variant
        return showar.Params(**{k: v for k, v in kw.items() if k in known})

    variants = [
        (params(), ScalerConfig(max_replicas=20)),
        (params(signal="p95"), ScalerConfig(max_replicas=10, target_runq_p95_seconds=0.02)),
        (params(ki=0.05, kd=0.1, error="relative"), ScalerConfig(max_replicas=8, min_replicas=2)),
        (params(max_replica_cores=0.5), ScalerConfig(max_replicas=20, min_cpu_per_replica=0.05)),
        (params(vertical=False), ScalerConfig(max_replicas=20)),
        (params(account_startup_delay=False),
         ScalerConfig(max_replicas=6, max_cpu_per_replica=0.8)),
    ]
    holders = [f for f in SERIES_FIELDS if f.startswith("runq_wait_") and f.endswith(
        "_seconds_per_second") and f != "runq_wait_seconds_per_second"]
    for wi in range(workloads):
        rng = np.random.default_rng(1000 + wi)
        p, config = variants[wi % len(variants)]
        n = steps * 3 + 400
        t = np.arange(n, dtype=float)
        base = rng.uniform(0.1, 2.0)
        wave = base * (1 + 0.6 * np.sin(t / rng.uniform(60, 400)) + 0.3 * (rng.random(n) < 0.02))
        wave = np.clip(wave + rng.normal(0, 0.05 * base, n), 0.0, None)
        cpr = rng.uniform(0.0001, 0.03)
        split, has_wait, gaps = rng.random() < 0.6, rng.random() < 0.85, rng.uniform(0, 0.1)
        cur = CurrentState(int(rng.integers(1, 5)), None if rng.random() < 0.1 else 0.4,
                           0.5 if rng.random() < 0.9 else None)
        ready_lag, state = 0, None
        hist = {k: np.full(n, np.nan) for k in SERIES_FIELDS}
        start = int(rng.integers(0, 300))
        for step in range(steps):
            now = start + 3 * step
            for s in range(max(start, now - 2), now + 1):
                lim = cur.cpu_limit_cores or 4.0
                ready = cur.replicas if ready_lag <= 0 else max(1, cur.replicas - 1)
                dem = wave[s]
                thr = min(1.0, max(0.0, (dem / max(lim * cur.replicas, 1e-9) - 0.7) * 2.5))
                rate = dem / cpr
                row = {"replicas": cur.replicas, "ready_replicas": ready,
                       "cpu_usage_cores": min(dem, ready * lim),
                       "cpu_request_cores": cur.cpu_request_cores or np.nan,
                       "cpu_limit_cores": cur.cpu_limit_cores or np.nan,
                       "runq_p95_seconds": 0.001 + 0.05 * thr + rng.exponential(0.002),
                       "throttled_ratio": thr,
                       "request_rate": rate if rng.random() > 0.05 else 0.0,
                       "pressure": min(1.0, thr + rng.uniform(0, 0.2))}
                if has_wait:
                    wait = rate * (0.0005 + 0.02 * thr) * rng.uniform(0.5, 1.5)
                    row["runq_wait_seconds_per_second"] = wait
                    row["throttled_seconds_per_second"] = thr * 0.05 * ready
                    if split:
                        row.update(zip(holders, rng.dirichlet([1, 1, 0.3, 0.3]) * wait,
                                       strict=True))
                for k, v in row.items():
                    hist[k][s] = v
                for k in SERIES_FIELDS:
                    if rng.random() < gaps:
                        hist[k][s] = np.nan
                ready_lag -= 1
            lo = max(start, now - 300)
            kept = np.arange(now, lo - 1, -spacing)[::-1]  # every `spacing` s back from now
            ts = np.sort(1.7e9 + t[kept] + rng.uniform(-0.01, 0.01))  # sample jitter
            series = {k: v[kept] for k, v in hist.items() if split or k not in holders}
            w = SignalWindow(WorkloadRef("replay", f"w{wi}"), ts, series)
            rec, state = showar.decide(w, cur, config, state, p)
            yield f"{wi} {step} {rec!r} {state!r}\n"
            new = rec.recommended
            if new.replicas > cur.replicas:
                ready_lag = int(rng.integers(0, 8))
            cur = CurrentState(max(1, new.replicas), new.cpu_request_cores, new.cpu_limit_cores)


def first_difference(a: list[str], b: list[str]) -> int | None:
    """The index of the first line that differs (or where one list ends early); None if equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _emit(workloads: int, steps: int, spacing: int, out: str) -> None:
    with open(out, "w") as f:
        f.writelines(closed_loop(workloads, steps, spacing))


def _decisions(rev: str, repo: str, work: str, workloads: int, steps: int,
               spacing: int) -> list[str]:
    from runqscale import revtree

    path = revtree.layout(revtree.checkout(rev, repo, work), work, rev)
    out = os.path.join(work, f"decisions-{rev.replace('/', '_')}.txt")
    # this file by path, that revision's package on PYTHONPATH: the loop is today's, the policy
    # (and the window, the model) the revision's
    revtree.run_python(path, [os.path.abspath(__file__), "--emit", out, "--workloads",
                              str(workloads), "--steps", str(steps), "--spacing",
                              str(spacing)],
                       f"{TOOL}: revision {rev}: the replay failed")
    with open(out) as f:
        return f.readlines()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {TOOL}", description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="*", help="one revision (against the checkout) or two")
    ap.add_argument("--workloads", type=int, default=120)
    ap.add_argument("--steps", type=int, default=200, help="decisions per workload")
    ap.add_argument("--spacing", type=int, choices=range(1, 61), default=1, metavar="SECONDS",
                    help="seconds between a window's samples (1: the agent's cadence; 3: the "
                         "decision bench's; 15: a Prometheus scrape interval)")
    ap.add_argument("--emit", metavar="FILE", help=argparse.SUPPRESS)  # the child's job
    a = ap.parse_args(argv)
    if a.emit:
        _emit(a.workloads, a.steps, a.spacing, a.emit)
        return 0
    if len(a.revs) not in (1, 2):
        ap.error("give one revision (compared with the checkout) or two")
    from runqscale import revtree  # not in the child: an older revision's tree has no revtree

    revs = [*a.revs, revtree.WORKTREE] if len(a.revs) == 1 else a.revs
    repo = revtree.repo_root(TOOL)
    with tempfile.TemporaryDirectory(prefix="runqscale-decisions-at-rev-") as tmp:
        try:
            got = [_decisions(rev, repo, tmp, a.workloads, a.steps, a.spacing) for rev in revs]
        finally:
            revtree.remove_worktrees(repo, tmp, revs)
    digest = [hashlib.sha256("".join(lines).encode()).hexdigest()[:16] for lines in got]
    i = first_difference(*got)
    if i is None:
        print(f"{len(got[0])} decisions ({a.workloads} workloads x {a.steps}, a sample every "
              f"{a.spacing} s) identical: "
              f"{revs[0]} and {revs[1]} (sha256 {digest[0]})")
        return 0
    print(f"decisions differ from decision {i} on ({revs[0]} {digest[0]}, {revs[1]} "
          f"{digest[1]}):")
    lines = [g[i] if i < len(g) else "" for g in got]
    # from a little before the first character that differs
    j = next((k for k, (x, y) in enumerate(zip(*lines, strict=False)) if x != y),
             min(map(len, lines)))
    for rev, line in zip(revs, lines, strict=True):
        shown = line[max(0, j - 120):j + 240].rstrip() if line else "(no more decisions)"
        print(f"  {rev}: {line.split(' ', 2)[:2]} ...{shown}")
    return 1


if __name__ == "__main__":
    if "--emit" in sys.argv:  # run by path in a revision's tree: keep this file's dir off sys.path
        sys.path.pop(0)
    raise SystemExit(main())
