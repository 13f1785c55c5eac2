"""SHOWAR's horizontal PID on a simulated plant: step responses and a recorded load.

The plant (deterministic): a service whose replicas each get 1 core (contention on the node, no
CFS throttling); per-replica load ρ = load / ready replicas; run-queue p95 = b·ρ/(1 − ρ) below
ρ = 0.95 and a steep linear continuation above, with b chosen so that ρ = 0.6 gives the 5 ms
target. Requested replicas become ready after a fixed start-up delay; removed replicas leave at
once (pending ones first). Vertical sizing is switched off (the plant's capacity per replica is
fixed). The load per replica that meets the ±10 % band is 0.575..0.623 core, so the ideal count
for a load L is ceil(L / 0.6226).

Stated bounds (asserted below):
- step up 2.4 -> 4.8 cores (ideal 4 -> 8), 15 s start-up delay: peak at most the ideal + 1
  replica, settled (count constant, p95 within the band from then on) within 45 s of the step;
- step up from 2.4 to 3.0, 3.6, 4.2, 6.0, 7.2 and 9.6 cores: peak at most the ideal + 1 and
  settled within 60 s (the plain relative error overshoots here; see showar's docstring);
- step down 4.8 -> 2.4: no replica below the ideal 4, ending at 4 or 5 (the desired count is
  rounded up, so scale-in may keep one spare replica), settled within 250 s (the proportional
  step approaches from above in two moves, each after a 120 s scale-in stabilisation);
- with a 30 s start-up delay, counting pending replicas as arriving avoids the naive PID's
  overshoot: peak at most the ideal + 1, where the naive controller goes well beyond;
- on 15 minutes of the World Cup 98 trace (rate doubling), scaled to 2.4..~5 cores: p95 above
  twice the target in at most 5 % of decisions, mean replicas within 20 % of the ideal count's
  mean, and at most 2 scale-ins (no flapping).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from test_scaler_helpers import NOW, window

from runqscale.scaler.model import CurrentState, ScalerConfig
from runqscale.scaler.policies import showar

T = 0.005
B = T * 0.4 / 0.6
PERIOD = showar.PERIOD_SECONDS
NO_VERTICAL = replace(showar.Params(), vertical=False, cooldown_seconds=15.0)
CFG = ScalerConfig(min_replicas=1, max_replicas=30, target_runq_p95_seconds=T)
DATA = Path(__file__).parent / "data" / "worldcup98"


def p95_of(load: float, ready: int) -> float:
    if ready <= 0:
        return 2.0
    rho = load / ready
    if rho < 0.95:
        return B * rho / (1 - rho)
    return min(2.0, B * (19 + 400 * (rho - 0.95)))


def ideal(load: float) -> int:
    rho_hi = 1.1 * T / (1.1 * T + B)  # b·ρ/(1−ρ) = 1.1·target
    return max(1, math.ceil(load / rho_hi - 1e-9))


@dataclass
class Run:
    t: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    p95: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)


def simulate(
    load_at, duration: float, start: int, delay: float, params: showar.Params = NO_VERTICAL
) -> Run:
    ready_at = [NOW - 1e6] * start  # per requested replica: when it is (or will be) ready
    run = Run()
    state = None
    hist: dict[str, list[float]] = {k: [] for k in ("ts", "replicas", "ready", "usage", "p95")}
    k = 0
    while k * PERIOD <= duration:
        now = NOW + k * PERIOD
        load = load_at(k * PERIOD)
        ready = sum(1 for r in ready_at if r <= now)
        p95 = p95_of(load, ready)
        for key, v in (
            ("ts", now),
            ("replicas", len(ready_at)),
            ("ready", ready),
            ("usage", min(load, float(ready))),
            ("p95", p95),
        ):
            hist[key].append(v)
        n = min(len(hist["ts"]), 100)
        w = window(
            n=n,
            step=PERIOD,
            now=now,
            replicas=hist["replicas"][-n:],
            ready_replicas=hist["ready"][-n:],
            cpu_usage_cores=hist["usage"][-n:],
            cpu_request_cores=0.6,
            cpu_limit_cores=1.2,
            runq_p95_seconds=hist["p95"][-n:],
            throttled_ratio=0.0,
        )
        rec, state = showar.decide(w, CurrentState(len(ready_at), 0.6, 1.2), CFG, state, params)
        want = rec.recommended.replicas
        if want > len(ready_at):
            ready_at += [now + delay] * (want - len(ready_at))
        elif want < len(ready_at):
            ready_at = sorted(ready_at)[:want]  # pending (latest ready_at) leave first
        run.t.append(k * PERIOD)
        run.replicas.append(len(ready_at))
        run.ready.append(ready)
        run.p95.append(p95)
        run.load.append(load)
        k += 1
    return run


def settle_time(run: Run, after: float) -> float:
    """First time >= after from which replicas are constant and p95 stays within the band."""
    t_settle = run.t[-1]
    for i in range(len(run.t) - 1, -1, -1):
        if run.t[i] < after:
            break
        if run.replicas[i] != run.replicas[-1] or run.p95[i] > 1.1 * T:
            break
        t_settle = run.t[i]
    return t_settle - after


def step(lo: float, hi: float, at: float = 60.0):
    return lambda t: lo if t < at else hi


def test_step_up_settles_without_overshoot() -> None:
    run = simulate(step(2.4, 4.8), 600, start=ideal(2.4), delay=15.0)
    assert ideal(2.4) == 4 and ideal(4.8) == 8
    before = [r for t, r in zip(run.t, run.replicas, strict=True) if t < 60]
    assert set(before) == {4}  # steady before the step: no action on a settled plant
    peak = max(run.replicas)
    ts = settle_time(run, 60.0)
    print(f"step up: peak {peak} (ideal 8), settled {ts:.0f} s after the step")
    assert run.replicas[-1] == 8
    assert peak <= 8 + 1
    assert ts <= 45.0


@pytest.mark.parametrize("high", [3.0, 3.6, 4.2, 6.0, 7.2, 9.6])
def test_step_up_sizes(high: float) -> None:
    run = simulate(step(2.4, high), 600, start=4, delay=15.0)
    peak, ts = max(run.replicas), settle_time(run, 60.0)
    print(f"step 2.4 -> {high}: ideal {ideal(high)}, peak {peak}, settled {ts:.0f} s")
    assert peak <= ideal(high) + 1
    assert run.replicas[-1] >= ideal(high)
    assert ts <= 60.0


def test_step_down_settles_without_undershoot() -> None:
    run = simulate(step(4.8, 2.4), 600, start=ideal(4.8), delay=15.0)
    after = [r for t, r in zip(run.t, run.replicas, strict=True) if t >= 60]
    ts = settle_time(run, 60.0)
    print(f"step down: min {min(after)} (ideal 4), settled {ts:.0f} s after the step")
    assert run.replicas[-1] in (4, 5)  # ceil() rounds scale-in up: at most one spare replica
    assert min(after) >= 4
    assert ts <= 250.0
    assert max(p for t, p in zip(run.t, run.p95, strict=True) if t >= 60) <= 1.1 * T


def test_pending_replicas_prevent_overshoot_with_a_slow_start() -> None:
    aware = simulate(step(2.4, 4.8), 600, start=4, delay=30.0)
    naive = simulate(
        step(2.4, 4.8),
        600,
        start=4,
        delay=30.0,
        params=replace(NO_VERTICAL, account_startup_delay=False),
    )
    print(f"30 s start-up: peak aware {max(aware.replicas)}, naive {max(naive.replicas)}")
    assert max(aware.replicas) <= 8 + 1
    assert max(naive.replicas) >= 8 + 4
    assert aware.replicas[-1] == 8


def _trace() -> np.ndarray:
    with open(DATA / "wc98_0625_rise_900s.csv", newline="") as f:
        counts = np.array([float(r["count"]) for r in csv.DictReader(f)])
    smooth = np.convolve(counts, np.ones(10) / 10, mode="valid")  # a p95 gauge is windowed
    return smooth * (2.4 / smooth[:30].mean())  # scale: the first 30 s carry 2.4 cores


def test_recorded_trace_tracks_the_load() -> None:
    load = _trace()
    run = simulate(
        lambda t: float(load[min(int(t), load.size - 1)]),
        load.size - 1,
        start=ideal(float(load[0])),
        delay=15.0,
    )
    over = np.mean(np.array(run.p95) > 2 * T)
    ideal_mean = np.mean([ideal(x) for x in run.load])
    mean_reps = float(np.mean(run.replicas))
    scale_ins = sum(1 for a, b in zip(run.replicas, run.replicas[1:], strict=False) if b < a)
    print(
        f"trace: p95 > 2x target in {over:.1%} of decisions, mean replicas {mean_reps:.2f} "
        f"(ideal {ideal_mean:.2f}), {scale_ins} scale-ins, peak load {max(run.load):.2f}"
    )
    assert over <= 0.05
    assert mean_reps <= 1.2 * ideal_mean
    assert scale_ins <= 2
