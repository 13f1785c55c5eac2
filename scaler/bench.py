"""Decision-time benchmark: one decision for each of N workloads, per policy.

    python -m runqscale.scaler.bench --out bench.json [--workloads 1000] [--repeat 7]

Windows are built beforehand (reading signals is not the decision): 5 minutes of samples every
3 s per workload, with varied load (one workload in ten starved) and every series the agent
exports (the time-weighted waits and their split by holder included). Each policy's size and
state come from 10-29 earlier decisions, each applied (`warmed`), so the timed decisions are a
running fleet's, spread over the phases of cool-down and stabilisation; the JSON counts the
kinds of decision timed (`decisions`). The
time reported is the median over repeats of deciding all N workloads once, wall clock and CPU
time of this process (the latter is what a loaded, shared machine distorts least); prints and
writes JSON. Also reports the load average, so a polluted measurement is recognisable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from runqscale.scaler.model import (
    HOLDER_FIELDS,
    CurrentState,
    Recommendation,
    ScalerConfig,
    SignalWindow,
    WorkloadRef,
)
from runqscale.scaler.policies import POLICIES, Policy
from runqscale.scaler.signals import window_at

# workload i's size and state come from 10-29 decisions every 3 s (30-87 s, `warm_decisions`):
# past showar's warm-up, and the workloads spread over the phases of its cool-down and 60 s
# scale-in stabilisation, as a fleet's are
WARM_DECISIONS = 10
WARM_PHASES = 20
STARVED_WAIT_FACTOR = 50.0


def make_windows(
    n: int, samples: int = 100, step: float = 3.0, seed: int = 1
) -> list[SignalWindow]:
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000.0 + step * np.arange(samples)
    out = []
    for i in range(n):
        replicas = float(rng.integers(1, 9))
        load = rng.uniform(0.2, 1.2) * replicas
        usage = np.clip(load + rng.normal(0, 0.05 * replicas, samples), 0, None)
        p95 = np.clip(0.005 * (load / replicas) / 0.6 + rng.normal(0, 0.0005, samples), 1e-5, None)
        series = {
            "replicas": np.full(samples, replicas),
            "ready_replicas": np.full(samples, replicas),
            "cpu_usage_cores": usage,
            "cpu_request_cores": np.full(samples, 1.0),
            "cpu_limit_cores": np.full(samples, 2.0),
            "runq_p95_seconds": p95,
            "throttled_ratio": np.full(samples, 0.02 if i % 3 else 0.2),
            "request_rate": usage * 100,
            "pressure": np.full(samples, 0.05),
        }
        # the time-weighted waits the agent exports (totals over replicas), split by holder:
        # showar reads them where they are (without them it would time a shorter path). One
        # workload in ten is starved, its wait per request far above showar's target, so the
        # above-target path (attribution, scale-out) is timed too
        wait = usage * p95 * rng.uniform(5.0, 20.0) * (STARVED_WAIT_FACTOR if i % 10 == 1 else 1.0)
        throttled = wait * (0.6 if i % 3 == 0 else 0.05)
        series["runq_wait_seconds_per_second"] = wait
        series["throttled_seconds_per_second"] = throttled
        for field, share in zip(HOLDER_FIELDS.values(), (0.3, 0.5, 0.05, 0.15), strict=True):
            series[field] = (wait - throttled) * share
        out.append(SignalWindow(WorkloadRef("bench", f"w{i}"), ts, series))
    return out


def warm_decisions(i: int) -> int:
    """How many decisions warm workload i: WARM_DECISIONS + 0..WARM_PHASES-1, shifted by one
    every ten workloads, so the starved ones (every tenth) are spread over the phases too."""
    return WARM_DECISIONS + (i + i // 10) % WARM_PHASES


def warmed(policy: Policy, window: SignalWindow, config: ScalerConfig,
           decisions: int = WARM_DECISIONS) -> tuple[CurrentState, Any]:
    """The size and state a policy reaches after deciding on the window's last `decisions`
    samples before its last one, each recommendation applied before the next decision, so the
    timed decision is one of a running scaler's (after a single unapplied warm-up decision,
    every timed showar decision had stopped early, in its cool-down). Open loop: the window's
    series do not follow the sizes applied."""
    current, state = CurrentState.from_window(window), None
    for back in range(decisions, 0, -1):
        # the window as it stood `back` samples before its last (all of it up to then)
        earlier = window_at(window, float(window.ts[-1 - back]), math.inf)
        assert earlier is not None  # it holds that sample
        rec, state = policy.decide(earlier, current, config, state)
        current = rec.recommended
    return current, state


def _kind(rec: Recommendation) -> str:
    """A decision's action and the head of its reason, without numbers ("none: below target but
    holding"). Coarse for policies whose reasons open alike (every vpa decision is "request")."""
    head = rec.reason.split(":", 1)[0]
    return f"{rec.action}: {re.split(r'[0-9(]', head, maxsplit=1)[0].strip()}"


def decision_mix(policy: Policy, windows: Sequence[SignalWindow],
                 warm: Sequence[tuple[CurrentState, Any]], config: ScalerConfig
                 ) -> dict[str, int]:
    """How many of the timed decisions are of each kind (`_kind`), most frequent first: which
    paths of the policy the time covers."""
    kinds = Counter(_kind(policy.decide(w, c, config, s)[0])
                    for w, (c, s) in zip(windows, warm, strict=True))
    return dict(kinds.most_common())


def run(workloads: int = 1000, repeat: int = 7) -> dict[str, Any]:
    windows = make_windows(workloads)
    config = ScalerConfig(max_replicas=20)
    warm = {name: [warmed(pol, w, config, warm_decisions(i)) for i, w in enumerate(windows)]
            for name, pol in POLICIES.items()}
    times: dict[str, list[float]] = {name: [] for name in POLICIES}
    cpus: dict[str, list[float]] = {name: [] for name in POLICIES}
    # repeats interleaved across policies, so a noisy stretch of a shared machine falls on all
    # of them alike and their ratios (which the tests compare) hold
    for _ in range(repeat):
        for name, pol in POLICIES.items():
            # new window objects each time, as the scaler builds them for every decision: a
            # window caches what it derives (per-replica divisor), which a reused one would keep
            fresh = [SignalWindow(w.workload, w.ts, w.series) for w in windows]
            t0, c0 = time.perf_counter(), time.process_time()
            for w, (c, s) in zip(fresh, warm[name], strict=True):
                pol.decide(w, c, config, s)
            times[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
    results: dict[str, Any] = {}
    for name in POLICIES:
        cpu = cpus[name]
        med = statistics.median(times[name])
        results[name] = {
            "median_ms": round(med * 1000, 3),
            "min_ms": round(min(times[name]) * 1000, 3),
            "max_ms": round(max(times[name]) * 1000, 3),
            "cpu_median_ms": round(statistics.median(cpu) * 1000, 3),
            # the least disturbed repeat: on a shared machine the others carry its neighbours
            "cpu_min_ms": round(min(cpu) * 1000, 3),
            "per_decision_us": round(med / workloads * 1e6, 2),
            "decisions": decision_mix(POLICIES[name], windows, warm[name], config),
        }
    return {
        "workloads": workloads,
        "samples_per_window": int(windows[0].ts.size),
        # 1 before stop 47, unapplied
        "warm_decisions": [WARM_DECISIONS, WARM_DECISIONS + WARM_PHASES - 1],
        "repeat": repeat,
        "policies": results,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="write the JSON result here")
    ap.add_argument("--workloads", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    result = run(args.workloads, args.repeat)
    text = json.dumps(result, indent=2)
    print(text)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
