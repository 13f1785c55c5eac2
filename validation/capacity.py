"""Capacity from CPU per request, measured open loop, and the load plan that follows from it.

Closed-loop throughput underestimates capacity (clients wait on each other, the generator's own
CPU competes) and says nothing about where the CPU goes. Instead: send a known light open-loop
rate to the *starting* deployment, read the CPU seconds its cgroups used (cpuacct), and divide by
the requests answered. Capacity = the allocated cores / CPU seconds per request; for a
deployment of several services, the service that runs out first (min over services of its
allocation / its CPU per request).

The trace segment is then mapped affinely onto real rates: its 1st-percentile step rate to
`trough` × capacity and its 99th-percentile to `peak` × capacity (defaults 0.3 and 1.4), so the
run starts over-provisioned, ends under-provisioned at the peak, and a policy has to scale both
ways. `trace.scale` is the slope (real req/s per trace req/s), `load.offset_rps` the intercept.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
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
        _out, err = p.communicate(timeout=seconds + 120)
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


def capacity_rps(cpu_per_request: Mapping[str, float], allocated: Mapping[str, float]) -> float:
    """Requests/s the allocation serves: min over the keys of allocated cores / CPU s per req."""
    caps = [allocated[k] / c for k, c in cpu_per_request.items() if k in allocated and c > 0]
    if not caps:
        raise RuntimeError("no CPU was measured per request; cannot size the load")
    return min(caps)


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
