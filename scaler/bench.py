"""Decision-time benchmark: one decision for each of N workloads, per policy.

    python -m runqscale.scaler.bench --out bench.json [--workloads 1000] [--repeat 7]

Windows are built beforehand (reading signals is not the decision): 5 minutes of samples every
3 s per workload, with varied load and every series the agent exports (the time-weighted waits and
their split by holder included), and each policy's size and state
warmed by ten earlier decisions, applied (`warmed`), as a running scaler's. The
time reported is the median over repeats of deciding all N workloads once, wall clock and CPU
time of this process (the latter is what a loaded, shared machine distorts least); prints and
writes JSON. Also reports the load average, so a polluted measurement is recognisable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import numpy as np

from runqscale.scaler.model import (
    HOLDER_FIELDS,
    CurrentState,
    ScalerConfig,
    SignalWindow,
    WorkloadRef,
)
from runqscale.scaler.policies import POLICIES, Policy

WARM_DECISIONS = 10  # 30 s of decisions every 3 s: past showar's warm-up and cool-down


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
        # showar reads them where they are, so a window without them would time a shorter path
        wait = usage * p95 * rng.uniform(5.0, 20.0)
        throttled = wait * (0.6 if i % 3 == 0 else 0.05)
        series["runq_wait_seconds_per_second"] = wait
        series["throttled_seconds_per_second"] = throttled
        for field, share in zip(HOLDER_FIELDS.values(), (0.3, 0.5, 0.05, 0.15), strict=True):
            series[field] = (wait - throttled) * share
        out.append(SignalWindow(WorkloadRef("bench", f"w{i}"), ts, series))
    return out


def _earlier(window: SignalWindow, back: int) -> SignalWindow:
    """The window as it stood `back` samples before its last."""
    return SignalWindow(window.workload, window.ts[:-back],
                        {k: v[:-back] for k, v in window.series.items()})


def warmed(policy: Policy, window: SignalWindow, config: ScalerConfig,
           decisions: int = WARM_DECISIONS) -> tuple[CurrentState, Any]:
    """The size and state a policy reaches after deciding on the window's last `decisions`
    samples before its last one, each recommendation applied before the next decision: the
    timed decision is then one of a running scaler's, past its warm-up and cool-downs (after a
    single warm-up decision every showar decision stopped early, in its cool-down)."""
    current, state = CurrentState.from_window(window), None
    for back in range(decisions, 0, -1):
        rec, state = policy.decide(_earlier(window, back), current, config, state)
        current = rec.recommended
    return current, state


def run(workloads: int = 1000, repeat: int = 7) -> dict[str, Any]:
    windows = make_windows(workloads)
    config = ScalerConfig(max_replicas=20)
    warm = {name: [warmed(pol, w, config) for w in windows] for name, pol in POLICIES.items()}
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
        }
    return {
        "workloads": workloads,
        "samples_per_window": int(windows[0].ts.size),
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
