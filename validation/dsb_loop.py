"""The local closed loop for the DeathStarBench emulation: every logic service is a workload of
its own, measured, decided and scaled independently, as runqscale does in a cluster.

Every tick (1 s) `ServiceMeter` reads the probe once and splits it by service (the cgroups under
`services/<service>/`), plus each service's and each store's CPU accounting; each service gets a
signals `Sample` over the last `signal_window_seconds`. The loop keeps no policy state, timing or
log: when the decision routine (runqscale.scaler.routine) says a service is due, its window goes
to the routine on a worker thread, which decides, applies through that service's local actuator
and logs (scaling one service must not stall the others' ticks; a service with a decision in
flight is not decided again until it ends). For showar, the routine's affinity/spread extras run
over all services' windows and are logged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from runqscale.agent.sampler import Sampler
from runqscale.deathstarbench.emulation.cluster import LOGIC_SERVICES, STORES, Cluster
from runqscale.probes.backends import Probe
from runqscale.probes.cgroupfs import read_cpu_stat
from runqscale.scaler.model import CurrentState, ScalerConfig, SignalWindow, WorkloadRef
from runqscale.scaler.policies.showar_sizing import SizingParams
from runqscale.scaler.routine import DecisionRoutine
from runqscale.validation.drive import LocalApply, policy_for
from runqscale.validation.loadgen import Records
from runqscale.validation.loop import LoadgenWatch
from runqscale.validation.scoring import Requests, Timeline, per_replica_allocation
from runqscale.validation.window import (
    Tally,
    interval_totals,
    make_sample,
    signal_fields,
    window_signals,
)

NAMESPACE = "social-network"


@dataclass(frozen=True)
class DsbLoopConfig:
    min_replicas: int = 1
    max_replicas: int = 4
    max_cpu_per_replica: float = 1.0
    target_cpu_utilization: float = ScalerConfig.target_cpu_utilization
    target_runq_p95_seconds: float = ScalerConfig.target_runq_p95_seconds
    showar_margin: float = SizingParams.sigma_k  # showar's limit = demand + this many sigma
    showar_replica_max: float | None = None  # showar's largest replica (None: the bound)
    showar_floor: float | None = None  # showar's smallest limit (None: the library's)
    tick_seconds: float = 1.0
    signal_window_seconds: float = 3.0
    request_timeout_seconds: float = 10.0
    settle_seconds: float = 3.0
    users: int = 962

    def scaler_config(self) -> ScalerConfig:
        return ScalerConfig(min_replicas=self.min_replicas, max_replicas=self.max_replicas,
                            max_cpu_per_replica=self.max_cpu_per_replica,
                            target_cpu_utilization=self.target_cpu_utilization,
                            target_runq_p95_seconds=self.target_runq_p95_seconds)


@dataclass
class ServiceTick:
    replicas: int
    limit_cores: float
    used_cores: float
    runq_p95_seconds: float | None
    throttled_ratio: float | None
    request_cores: float = 0.0
    runq_wait_seconds_per_second: float = 0.0
    throttled_seconds_per_second: float = 0.0


@dataclass
class DsbTick:
    t: float  # seconds since the generator's start
    sent_rps: float
    services: dict[str, ServiceTick]
    stores_used_cores: dict[str, float]


class ServiceMeter:
    """Per tick: per-service run-queue histograms, CPU used, throttling; per-store CPU used."""

    def __init__(self, cluster: Cluster, probe: Probe) -> None:
        self.c, self.probe = cluster, probe
        sb = cluster.sb
        self.svc_rel = {s: cluster.service_group(s).rel for s in LOGIC_SERVICES}
        self.store_rel = {s.name: cluster.store_group(s.name).rel for s in STORES}
        self.sampler = Sampler(probe, sb.mounts, sb.root, only=list(self.svc_rel.values()))
        self.sampler.sample()
        self._usage = {k: self._read(v) for k, v in {**self.svc_rel, **self.store_rel}.items()}
        self._t = time.monotonic()

    def _read(self, rel: str) -> float | None:
        st = read_cpu_stat(self.c.sb.mounts, self.c.sb.hierarchy, rel)
        return st.usage_seconds if st else None

    def sample(self) -> tuple[float, dict[str, Tally], dict[str, float]]:
        """(seconds, {service: its cgroups' tally}, {service or store: cores used})."""
        iv = self.sampler.sample()
        now = time.monotonic()
        dt, self._t = max(1e-6, now - self._t), now
        by_svc: dict[str, list] = {}
        for cs in iv.cgroups:
            svc = next((s for s, rel in self.svc_rel.items()
                        if cs.path == rel or cs.path.startswith(rel + "/")), None)
            if svc is not None:
                by_svc.setdefault(svc, []).append(cs)
        hist = {svc: interval_totals(cgs) for svc, cgs in by_svc.items()}
        used = {}
        for k, rel in {**self.svc_rel, **self.store_rel}.items():
            u = self._read(rel)
            p = self._usage.get(k)
            used[k] = (u - p) / dt if u is not None and p is not None else 0.0
            self._usage[k] = u
        return dt, hist, used


@dataclass
class DsbRun:
    policy: str
    repeat: int
    seconds: float
    records: Records
    ticks: list[DsbTick]
    decisions: int
    decide_calls: int
    actuations: list[dict] = field(default_factory=list)
    windows: dict[str, SignalWindow] = field(default_factory=dict)  # per service, whole run

    def requests(self) -> Requests:
        r = self.records
        return Requests(r.scheduled, r.latency, r.ok, r.late)

    def timeline(self) -> Timeline:
        """All logic services together: replicas = Σ replicas, requested = Σ replicas ×
        request, allocated = Σ replicas × max(request, limit) (no limit: the node's CPUs shared
        by every replica of every service), limit = Σ allocated / Σ replicas, used = Σ used."""
        ts = [k for k in self.ticks if k.t >= 0] or self.ticks[-1:]
        t = np.array([0.0] + [k.t for k in ts[1:]]) if ts else np.zeros(0)
        reps = np.array([sum(s.replicas for s in k.services.values()) for k in ts], float)
        node = float(os.cpu_count() or 1)
        alloc = np.array([sum(s.replicas * float(per_replica_allocation(
            np.array([s.request_cores]), np.array([s.limit_cores]),
            np.array([sum(x.replicas for x in k.services.values())]), node)[0])
            for s in k.services.values()) for k in ts])
        req = np.array([sum(s.replicas * s.request_cores for s in k.services.values())
                        for k in ts])
        used = np.array([sum(s.used_cores for s in k.services.values()) for k in ts])
        used = np.append(used[1:], used[-1:]) if used.size else used  # onto the interval start
        return Timeline(t, reps, np.divide(alloc, np.maximum(reps, 1e-9)), used,
                        requested_total=req, allocated_total=alloc)

    def service_series(self, key: str) -> dict[str, np.ndarray]:
        return {s: np.array([getattr(k.services[s], key) if getattr(k.services[s], key)
                             is not None else np.nan for k in self.ticks])
                for s in LOGIC_SERVICES}


def start_loadgen(cluster: Cluster, args: list[str], timeout_s: float) -> subprocess.Popen:
    argv = [sys.executable, "-m", "runqscale.validation.loadgen", "--app", "deathstarbench",
            "--url", cluster.front_url, "--timeout", str(timeout_s), *args]
    return cluster.sb.spawn(cluster.infra, argv=argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_policy(cluster: Cluster, probe: Probe, cfg: DsbLoopConfig, policy: str | None,
               repeat: int, sched_path: str, seconds: float, out_dir: str, seed: int = 0,
               on_tick: Callable[[DsbTick], None] | None = None) -> DsbRun:
    """One run: the schedule replayed while `policy` scales every logic service (None: nothing
    is decided, the replica set stays as it is)."""
    pol = policy_for(policy, showar_margin=cfg.showar_margin,
                     showar_replica_max=cfg.showar_replica_max,
                     showar_floor=cfg.showar_floor) if policy else None
    scfg = cfg.scaler_config()
    meter = ServiceMeter(cluster, probe)
    tag = policy or "fixed"
    adapter = LocalApply({s: cluster.actuators[s] for s in LOGIC_SERVICES})
    routine = DecisionRoutine(
        adapter, os.path.join(out_dir, f"recommendations-{tag}-{repeat}.jsonl"), resume=False)
    records_path = os.path.join(out_dir, f".records-{tag}-{repeat}.npz")
    lg = LoadgenWatch(start_loadgen(cluster, ["--schedule", sched_path, "--out", records_path,
                                              "--users", str(cfg.users), "--seed", str(seed)],
                                    cfg.request_timeout_seconds), records_path)
    nwin = max(1, round(cfg.signal_window_seconds / cfg.tick_seconds))
    wins: dict[str, deque[Tally]] = {s: deque(maxlen=nwin) for s in LOGIC_SERVICES}
    samples = {s: deque(maxlen=int(900 / cfg.tick_seconds)) for s in LOGIC_SERVICES}
    refs = {s: WorkloadRef(NAMESPACE, s) for s in LOGIC_SERVICES}
    pending: dict[str, Future] = {}
    ticks: list[DsbTick] = []
    calls = 0
    # ticks start at the schedule's 0: the first one reads a whole second of load (loop.py)
    start = lg.wait_start()
    meter.sample()
    sent_prev = lg.sent
    next_tick = start + cfg.tick_seconds
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="actuate")
    try:
        while True:
            time.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick += cfg.tick_seconds
            dt, hist, used = meter.sample()
            sent = lg.sent
            rate, sent_prev = (sent - sent_prev) / dt, sent
            ts = time.time()
            adapter.t0 = t0 = lg.t0
            svc_ticks, current = {}, {}
            for s in LOGIC_SERVICES:
                wins[s].append(replace(hist.get(s, Tally(None)), used_seconds=used[s] * dt,
                                       seconds=dt, sent=rate * dt))
                sig = window_signals(wins[s])
                act = cluster.actuators[s]
                cur = current[s] = act.current()
                svc_ticks[s] = ServiceTick(act.alive(), cur.cpu_limit_cores or 0.0, used[s],
                                           sig.runq_p95_seconds, sig.throttled_ratio,
                                           cur.cpu_request_cores or 0.0,
                                           sig.runq_wait_seconds_per_second,
                                           sig.throttled_seconds_per_second)
                samples[s].append(make_sample(
                    ts=ts, workload=refs[s], replicas=cur.replicas,
                    ready_replicas=act.ready_replicas, cpu_request_cores=cur.cpu_request_cores,
                    cpu_limit_cores=cur.cpu_limit_cores, **signal_fields(sig)))
            tick = DsbTick(ts - t0, rate, svc_ticks,
                           {st.name: used[st.name] for st in STORES})
            ticks.append(tick)
            if on_tick:
                on_tick(tick)
            if lg.done():
                break
            if pol is None or tick.t < 0:
                continue
            mono = time.monotonic()
            windows = {s: SignalWindow.from_samples(list(samples[s])) for s in LOGIC_SERVICES}
            for s in LOGIC_SERVICES:
                if s in pending and not pending[s].done():
                    continue
                # the routine owns when a service is due (its period, on the monotonic clock)
                if routine.due(refs[s], pol, scfg, mono):
                    calls += 1
                    pending[s] = pool.submit(routine.decide, windows[s], current[s], pol, scfg,
                                             mono)
            if pol.name == "showar":  # SHOWAR's affinity/spread, every affinity period
                routine.extras(list(windows.values()),
                               {refs[s]: current[s] for s in LOGIC_SERVICES}, scfg, ts)
    finally:
        pool.shutdown(wait=True)
    records = lg.records()
    return DsbRun(tag, repeat, seconds, records, ticks, adapter.applied, calls,
                  adapter.actuations,
                  {s: SignalWindow.from_samples(list(samples[s])) for s in LOGIC_SERVICES})


def initial_states(cluster: Cluster) -> dict[str, CurrentState]:
    return {s: cluster.cfg.state(s) for s in LOGIC_SERVICES}
