"""Which service is the bottleneck? Per-service run-queue latency against CPU usage and
utilisation, under one steady load, on the emulated social network.

`profile(cluster, probe, rate_rps, seconds)` sends the mixed workload open-loop at a constant
rate and returns, per logic service, the p95 of all its run-queue waits over the run (one merged
histogram), its CPU usage (cores), utilisation (usage / limit) and throttled share. `rank(...)`
orders services by one of those columns.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from runqscale import tables
from runqscale.deathstarbench.emulation.cluster import LOGIC_SERVICES, Cluster
from runqscale.probes.backends import Probe
from runqscale.probes.model import quantile_seconds
from runqscale.validation.dsb_loop import ServiceMeter, start_loadgen
from runqscale.validation.loadgen import Records
from runqscale.validation.traces import schedule


@dataclass(frozen=True)
class ServiceProfile:
    service: str
    runq_p95_seconds: float | None
    runq_p99_seconds: float | None
    cpu_cores: float
    limit_cores: float
    throttled_ratio: float

    @property
    def utilisation(self) -> float:
        return self.cpu_cores / self.limit_cores if self.limit_cores else float("nan")


@dataclass(frozen=True)
class Profile:
    rate_rps: float
    seconds: float
    requests: int
    ok: int
    p99_seconds: float | None
    services: dict[str, ServiceProfile]

    def rank(self, key: str) -> list[str]:
        def v(s: ServiceProfile) -> float:
            x = getattr(s, key)
            return -1.0 if x is None or not np.isfinite(x) else float(x)
        return sorted(self.services, key=lambda n: -v(self.services[n]))

    def table(self) -> str:
        t = tables.new(["service", "runq p95", "runq p99", "CPU", "limit", "util", "thr"],
                       numeric=["runq p95", "runq p99", "CPU", "limit", "util", "thr"])
        for n in self.rank("runq_p95_seconds"):
            s = self.services[n]
            tables.add_row(t, n, _ms(s.runq_p95_seconds), _ms(s.runq_p99_seconds),
                           f"{s.cpu_cores:.3f}", f"{s.limit_cores:.2f}", f"{s.utilisation:.2f}",
                           f"{s.throttled_ratio:.2f}")
        return tables.render(t)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.2f} ms"


def profile(cluster: Cluster, probe: Probe, rate_rps: float, seconds: float,
            warmup_s: float = 3.0, users: int = 962, seed: int = 0) -> Profile:
    tmp = tempfile.mkdtemp(prefix="runqscale-dsb-profile-")
    sched_path = os.path.join(tmp, "s.npy")
    rec_path = os.path.join(tmp, "r.npz")
    np.save(sched_path, schedule(np.full(int(np.ceil(warmup_s + seconds)), rate_rps), 1.0,
                                 seed=seed))
    meter = ServiceMeter(cluster, probe)
    lg = start_loadgen(cluster, ["--schedule", sched_path, "--out", rec_path, "--users",
                                 str(users), "--seed", str(seed)], 10.0)
    time.sleep(warmup_s)
    meter.sample()  # measure from here: caches warm, queues formed
    slots: dict[str, np.ndarray] = {}
    used = dict.fromkeys(LOGIC_SERVICES, 0.0)
    thr = {s: [0, 0] for s in LOGIC_SERVICES}
    measured = 0.0
    while lg.poll() is None:
        time.sleep(1.0)
        dt, hist, u = meter.sample()
        measured += dt
        for s, t in hist.items():
            if t.slots is not None:
                slots[s] = t.slots.copy() if s not in slots else slots[s] + t.slots
            thr[s][0] += t.periods_throttled
            thr[s][1] += t.periods
        for s in LOGIC_SERVICES:
            used[s] += u[s] * dt
    _, err = lg.communicate(timeout=30)
    if lg.returncode != 0:
        raise RuntimeError(f"the load generator failed: {err.strip()[-300:]}")
    rec = Records.load(rec_path)
    ok = rec.ok & np.isfinite(rec.latency)
    for p in (sched_path, rec_path):
        os.unlink(p)
    os.rmdir(tmp)
    services = {}
    for s in LOGIC_SERVICES:
        sl = slots.get(s)
        lim = cluster.actuators[s].current().cpu_limit_cores or 0.0
        services[s] = ServiceProfile(
            s, quantile_seconds(sl, 0.95) if sl is not None else None,
            quantile_seconds(sl, 0.99) if sl is not None else None,
            used[s] / max(measured, 1e-9), lim,
            thr[s][0] / thr[s][1] if thr[s][1] else 0.0)
    return Profile(rate_rps, seconds, int(rec.ok.size), int(ok.sum()),
                   float(np.percentile(rec.latency[ok], 99)) if ok.any() else None, services)
