"""Capacity from CPU per request, measured open loop, and the load plan that follows from it.

Closed-loop throughput underestimates capacity (clients wait on each other, the generator's own
CPU competes) and says nothing about where the CPU goes. Instead: send known open-loop rates to
the *starting* deployment and read the CPU seconds its cgroups used (cpuacct). One light rate is
not enough: a service also burns CPU with no requests (timers, keep-alives, its runtime), which
a light rate divides over few requests. DeathStarBench measured 1.41 ms per request at 10 req/s
and used 0.75-0.87 ms per request in the runs, so a load planned to peak at 1.4x its capacity
peaked at ~0.8x and no CPU-utilisation policy ever had to act. So two rates, light and ~half the
capacity the light one implies, fit per service: CPU cores = idle + marginal CPU per request x
rate. Capacity = (allocated - idle) / marginal; for a deployment of several services, the
service that runs out first. The pair of rates is measured three times in turn and the
measurement with the median capacity kept: this machine's speed moves within minutes.

The trace segment is then mapped affinely onto real rates: its 1st-percentile step rate to
`trough` × capacity and its 99th-percentile to `peak` × capacity (defaults 0.3 and 1.4), so the
run starts over-provisioned, ends under-provisioned at the peak, and a policy has to scale both
ways. `trace.scale` is the slope (real req/s per trace req/s), `load.offset_rps` the intercept.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from runqscale.validation import traces
from runqscale.validation.loadgen import Records

PEAK_FRACTION = 1.4
TROUGH_FRACTION = 0.3


def measure_cpu_per_request(start: Callable[[list[str]], subprocess.Popen],
                            usage: Callable[[], Mapping[str, float]], rate_rps: float,
                            seconds: float, seed: int = 12345) -> dict:
    """Replay a steady Poisson `rate_rps` for `seconds` through `start(loadgen args)`; CPU
    seconds per answered request for every key of `usage()` (cumulative CPU seconds)."""
    sched = traces.schedule(np.full(int(np.ceil(seconds)), rate_rps), 1.0, seed=seed)
    tmp = tempfile.mkdtemp(prefix="runqscale-capacity-")
    sched_path, rec_path = os.path.join(tmp, "s.npy"), os.path.join(tmp, "r.npz")
    np.save(sched_path, sched)
    try:
        before, t0 = dict(usage()), time.monotonic()
        p = start(["--schedule", sched_path, "--out", rec_path])
        try:
            _out, err = p.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            p.kill()  # not left sending into the runs that follow
            p.communicate()
            raise RuntimeError(f"the CPU-per-request measurement at {rate_rps:g} req/s did not "
                               f"end within {seconds + 120:g} s") from None
        after, dt = dict(usage()), time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError(f"the CPU-per-request measurement failed: {err.strip()[-300:]}")
        rec = Records.load(rec_path)
    finally:
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    ok = int((rec.ok & np.isfinite(rec.latency)).sum())
    if ok == 0:
        raise RuntimeError(f"no request succeeded at {rate_rps:g} req/s during the "
                           "CPU-per-request measurement; see nginx's error log")
    used = {k: max(0.0, after[k] - before.get(k, 0.0)) for k in after}
    return {"rate_rps": rate_rps, "seconds": dt, "requests": int(rec.ok.size), "ok": ok,
            "cpu_seconds": used,
            "cpu_seconds_per_request": {k: v / ok for k, v in used.items()}}


LOADED_FRACTION = 0.5  # the second rate, as a fraction of the capacity the light rate implies
MIN_SPREAD = 1.5  # the loaded rate must answer at least this many times the light one's rate


@dataclass(frozen=True)
class CpuModel:
    """Per key: CPU cores used with no requests, and CPU seconds per added request."""
    idle_cores: dict[str, float]
    cpu_seconds_per_request: dict[str, float]

    def capacity(self, allocated: Mapping[str, float]) -> tuple[float, str]:
        """(req/s, bottleneck key): the rate at which the first key's allocation runs out."""
        caps = {k: (allocated[k] - self.idle_cores[k]) / m
                for k, m in self.cpu_seconds_per_request.items() if k in allocated and m > 0}
        if not caps:
            raise RuntimeError("no CPU was measured per request; cannot size the load")
        key = min(caps, key=caps.__getitem__)
        if caps[key] <= 0:
            raise RuntimeError(f"{key} uses {self.idle_cores[key]:.3g} core with no requests, "
                               f"all of its {allocated[key]:g} core: raise --replica-cpu")
        return caps[key], key


def fit_cpu_model(light: Mapping, loaded: Mapping) -> CpuModel:
    """The line through two measurements (measure_cpu_per_request's results) per key. Where the
    two rates are too close to fit or the slope is not positive (noise on a quiet service), the
    loaded measurement's plain average, with no idle; where the line crosses below 0 at no load
    (CPU per request grows with the rate), its slope with no idle: the larger, safe side."""
    x1, x2 = (m["ok"] / m["seconds"] for m in (light, loaded))
    idle: dict[str, float] = {}
    marginal: dict[str, float] = {}
    for k, c2 in loaded["cpu_seconds"].items():
        u1 = light["cpu_seconds"].get(k, 0.0) / light["seconds"]
        u2 = c2 / loaded["seconds"]
        if x2 >= MIN_SPREAD * x1 and u2 > u1:  # a line that rises with the rate
            marginal[k] = (u2 - u1) / (x2 - x1)
            idle[k] = max(0.0, u1 - marginal[k] * x1)
        else:
            idle[k], marginal[k] = 0.0, (u2 / x2 if x2 > 0 else 0.0)
    return CpuModel(idle, marginal)


# This machine's speed moves by up to 1.7x within minutes (a fixed loop timed between DSB's
# measurements: 122-209 ms), and one light/loaded pair takes about 22 s (DSB; runlang 33 s):
# stop 47's two DSB invocations read 346.9 and 201.9 req/s, and one 20 s pair of stop 48 read
# every service's CPU per request 2x the others'. So the pair is repeated and the one whose
# capacity is the median used.
CAPACITY_REPEATS = 3


def measure_capacity(start: Callable[[list[str]], subprocess.Popen],
                     usage: Callable[[], Mapping[str, float]], allocated: Mapping[str, float],
                     rate_rps: float, seconds: float, seed: int = 12345,
                     loaded_fraction: float = LOADED_FRACTION,
                     repeats: int = CAPACITY_REPEATS,
                     before_each: Callable[[], object] = lambda: None,
                     say: Callable[[str], None] = lambda _m: None) -> dict:
    """Capacity of the starting deployment from a light and a loaded open-loop rate, measured
    `repeats` times in turn (light, loaded, light, loaded, ...), each after `before_each()`
    (DeathStarBench: the stores reseeded, as every run starts): the measurement whose capacity
    is the median (`median_measurement`), every capacity read in `repeats_rps`, every
    measurement in `tries` and every failed one's error in `failures`. A measurement that fails
    is reported and left out; only when all fail does the capacity fail, with the last one's
    error."""
    if repeats < 1:
        raise ValueError(f"the capacity is measured at least once, not {repeats} times")
    tries: list[dict] = []
    failures: list[dict] = []
    error: RuntimeError | None = None
    for i in range(repeats):
        if repeats > 1:
            say(f"  measurement {i + 1} of {repeats}:")
        before_each()
        try:
            tries.append(_measure_once(start, usage, allocated, rate_rps, seconds, seed + 2 * i,
                                       loaded_fraction, say))
        except RuntimeError as e:
            if repeats == 1:
                raise
            error = e
            failures.append({"measurement": i + 1, "error": str(e)})
            say(f"  measurement {i + 1} failed, left out: {e}")
    if not tries:
        assert error is not None
        raise error
    chosen = median_measurement(tries)
    reads = [t["rps"] for t in tries]
    if len(tries) > 1:
        say(f"  capacity {chosen['rps']:.1f} req/s: the median of {len(tries)} measurements "
            f"({min(reads):.1f}-{max(reads):.1f}, {max(reads) / min(reads):.2f}x apart)")
    elif repeats > 1:
        say(f"  capacity {chosen['rps']:.1f} req/s: the only measurement of {repeats} that "
            "succeeded")
    return {**chosen, "repeats_rps": reads, "tries": tries, "failures": failures}


def median_measurement(tries: Sequence[Mapping]) -> Mapping:
    """The measurement whose capacity (`rps`) is the median: the middle one of the capacities
    sorted, the lower middle one of an even number. A whole measurement, not an average of
    several, so its capacity still follows from its own idle CPU and CPU per request."""
    if not tries:
        raise ValueError("no capacity measurement to choose from")
    return sorted(tries, key=lambda t: t["rps"])[(len(tries) - 1) // 2]


def _measure_once(start: Callable[[list[str]], subprocess.Popen],
                  usage: Callable[[], Mapping[str, float]], allocated: Mapping[str, float],
                  rate_rps: float, seconds: float, seed: int, loaded_fraction: float,
                  say: Callable[[str], None]) -> dict:
    light = measure_cpu_per_request(start, usage, rate_rps, seconds, seed=seed)
    first = capacity_rps(light["cpu_seconds_per_request"], allocated)
    loaded_rate = max(2.0 * rate_rps, loaded_fraction * first)
    say(f"  {rate_rps:g} req/s: {first:.1f} req/s if all CPU were per request; "
        f"now {loaded_rate:.1f} req/s to separate the idle CPU ...")
    loaded = measure_cpu_per_request(start, usage, loaded_rate, seconds, seed=seed + 1)
    model = fit_cpu_model(light, loaded)
    rps, bottleneck = model.capacity(allocated)
    say(f"  capacity {rps:.1f} req/s (bottleneck {bottleneck}: "
        f"{model.cpu_seconds_per_request[bottleneck] * 1e3:.3g} ms per request, "
        f"{model.idle_cores[bottleneck] * 1e3:.3g} millicores idle)")
    return {"rps": rps, "bottleneck": bottleneck, "rate_rps": rate_rps,
            "loaded_rate_rps": loaded_rate, "light": light, "loaded": loaded,
            "single_rate_rps": first, "idle_cores": model.idle_cores,
            "cpu_seconds_per_request": model.cpu_seconds_per_request}


def capacity_rps(cpu_per_request: Mapping[str, float], allocated: Mapping[str, float]) -> float:
    """Requests/s the allocation serves: min over the keys of allocated cores / CPU s per req."""
    caps = [allocated[k] / c for k, c in cpu_per_request.items() if k in allocated and c > 0]
    if not caps:
        raise RuntimeError("no CPU was measured per request; cannot size the load")
    return min(caps)


def realised_load(runs: Sequence[Mapping], allocated_cores: float,
                  capacity: float) -> dict | None:
    """How heavy the replay was in CPU against its plan: the median over kept runs of CPU
    core-seconds used per request served (idle CPU included), and its ratio to allocated cores /
    capacity, the CPU per request the capacity stands for at full load. Runs average below full
    load, so their idle CPU weighs more: a plan that held reads a little over 1 (1.08-1.17 in
    stops 31-33). A fixed --capacity on a machine whose speed drifted reads higher (stop 34:
    1.27 on the per-second trace). None when no kept run served a request."""
    per = []
    for r in runs:
        served = (r.get("requests") or 0) - (r.get("failed") or 0)
        if not r.get("excluded") and served > 0 and r.get("cpu_core_seconds_used") is not None:
            per.append(float(r["cpu_core_seconds_used"]) / served)
    if not per or capacity <= 0 or allocated_cores <= 0:
        return None
    cpr, planned = statistics.median(per), allocated_cores / capacity
    return {"used_cpu_seconds_per_request": cpr, "planned_cpu_seconds_per_request": planned,
            "ratio": cpr / planned, "kept_runs": len(per)}


# A realised load this far from its plan with a given --capacity means the machine's speed
# drifted since it was measured: plans that held read 0.89-1.17 (stops 31-33, 47); stop 34's
# fixed capacity read 1.27, stop 46's 1.41, and that run's baselines were starved at their
# replica bound by the heavier load, which turned a comparison (stop 47).
STALE_CAPACITY_RATIO = 1.25


def load_line(realised: Mapping | None, capacity_given: bool) -> str | None:
    """The realised load in one line, to compare invocations by (None without a reading). When
    the capacity was given and the load is STALE_CAPACITY_RATIO x its plan or more (or 1 /
    STALE_CAPACITY_RATIO x or less), as printed, the line says the capacity is stale and how to
    fix it."""
    if not realised:
        return None
    src = "given with --capacity" if capacity_given else "measured before the runs"
    line = (f"load: the runs used a median {realised['used_cpu_seconds_per_request'] * 1e3:.1f} "
            f"ms of CPU per request served, {realised['ratio']:.2f}x the "
            f"{realised['planned_cpu_seconds_per_request'] * 1e3:.1f} ms the capacity ({src}) "
            f"stands for at full load")
    ratio = round(realised["ratio"], 2)  # as printed: a line reading 1.25x says it is stale
    if capacity_given and not round(1 / STALE_CAPACITY_RATIO, 2) < ratio < STALE_CAPACITY_RATIO:
        line += "; --capacity is stale on this machine: omit it to measure the capacity first"
    return line


@dataclass(frozen=True)
class LoadPlan:
    capacity_rps: float
    peak_fraction: float
    trough_fraction: float
    scale: float  # real req/s per trace req/s (the slope)
    offset_rps: float  # real req/s added to every step (the intercept)
    trace_low_rps: float  # the segment's 1st percentile step rate (trace req/s)
    trace_high_rps: float  # ... and its 99th

    def apply(self, trace_rates: np.ndarray) -> np.ndarray:
        return np.maximum(0.0, self.offset_rps + self.scale * trace_rates)

    def to_json(self) -> dict:
        return {"capacity_rps": self.capacity_rps, "peak_fraction": self.peak_fraction,
                "trough_fraction": self.trough_fraction, "scale": self.scale,
                "offset_rps": self.offset_rps, "trace_p01_rps": self.trace_low_rps,
                "trace_p99_rps": self.trace_high_rps}


def plan_segment(trace: traces.Trace, duration_s: float, capacity: float,
                 peak: float = PEAK_FRACTION, trough: float = TROUGH_FRACTION,
                 start_s: float | None = None, length_s: float | None = None,
                 time_warp: float | None = None, max_warp: float = 60.0
                 ) -> tuple[traces.Segment, np.ndarray, LoadPlan]:
    """What `runqscale validate` replays: the segment (the busiest window unless given), its
    trace rate per real second, and the map of those onto trough..peak × capacity."""
    seg = traces.window_segment(trace, duration_s, start_s, length_s, time_warp, max_warp)
    base = traces.real_rates(trace, seg)
    return seg, base, plan_load(base, capacity, peak, trough)


def plan_load(segment_rates: np.ndarray, capacity: float, peak: float = PEAK_FRACTION,
              trough: float = TROUGH_FRACTION) -> LoadPlan:
    """The affine map of the segment's p01..p99 step rates onto trough..peak × capacity (a flat
    segment: scaled so its rate is `peak` × capacity)."""
    if not capacity > 0:
        raise ValueError(f"capacity must be > 0, got {capacity}")
    if not 0 <= trough <= peak:
        raise ValueError(f"the trough fraction {trough:g} must be within 0 and the peak {peak:g}")
    lo, hi = (float(np.quantile(segment_rates, q)) for q in (0.01, 0.99))
    if not hi > 1e-6:  # also denormal rates, whose spread and inverse overflow
        raise ValueError("the segment has no requests; choose another --segment")
    if hi - lo <= 1e-9 * hi:
        return LoadPlan(capacity, peak, trough, peak * capacity / hi, 0.0, lo, hi)
    scale = (peak - trough) * capacity / (hi - lo)
    return LoadPlan(capacity, peak, trough, scale, trough * capacity - scale * lo, lo, hi)
