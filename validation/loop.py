"""The local closed loop: real replicas behind nginx, the open-loop generator replaying a trace,
the agent's Sampler measuring, the policy under test deciding, the local actuator acting.

Every tick (1 s) the loop reads the probe (run-queue histograms of every replica cgroup, merged)
and the replicas' CPU accounting, and appends one signals `Sample` for the workload. The signals
in a sample are over the last `signal_window_seconds` (3 s by default): run-queue p95 of the merged
histogram, CPU usage (total over replicas, from the parent cgroup's cpuacct, so replicas that
left are still counted), throttled ratio (Σ throttled periods / Σ periods) and the request rate
the generator sent. Every policy period the loop builds the window, calls `decide`, applies the
recommendation through the actuator and appends it to the recommendations log.

Nginx and the generator run in their own cgroup (`infra`, cpu.shares 4096 so they keep up),
outside the measured `replicas` tree.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from runqscale.agent.sampler import CgroupSample, Sampler
from runqscale.probes.backends import Probe
from runqscale.probes.cgroupfs import CgroupMounts, read_cpu_stat
from runqscale.probes.model import Hierarchy, quantile_seconds
from runqscale.scaler import log as reclog
from runqscale.scaler import policies
from runqscale.scaler.actuators.cgroups import Sandbox, set_base_shares, set_shares
from runqscale.scaler.actuators.local import LocalActuator
from runqscale.scaler.model import CurrentState, Sample, ScalerConfig, SignalWindow, WorkloadRef
from runqscale.scaler.policies import static
from runqscale.validation.loadgen import Records
from runqscale.validation.nginx import Nginx
from runqscale.validation.runlang_service import DEFAULT_SOURCE, runlang_argv
from runqscale.validation.scoring import Requests, Timeline

WORKLOAD = WorkloadRef("validate", "runlang")


@dataclass(frozen=True)
class LoopConfig:
    min_replicas: int = 1
    max_replicas: int = 4
    initial_replicas: int = 2
    static_replicas: int | None = None  # None: max_replicas (provisioned for the peak)
    replica_cpu: float = 0.4  # initial request = limit per replica (cores)
    max_cpu_per_replica: float = 1.0
    target_cpu_utilization: float = 0.75
    target_runq_p95_seconds: float = 0.005
    tick_seconds: float = 1.0
    signal_window_seconds: float = 3.0
    request_timeout_seconds: float = 10.0
    settle_seconds: float = 3.0
    source: str = DEFAULT_SOURCE

    def scaler_config(self) -> ScalerConfig:
        return ScalerConfig(min_replicas=self.min_replicas, max_replicas=self.max_replicas,
                            max_cpu_per_replica=self.max_cpu_per_replica,
                            target_cpu_utilization=self.target_cpu_utilization,
                            target_runq_p95_seconds=self.target_runq_p95_seconds)

    def initial_state(self, policy: str) -> CurrentState:
        n = self.initial_replicas
        if policy == "static":
            n = self.static_replicas or self.max_replicas
        return CurrentState(n, self.replica_cpu, self.replica_cpu)


@dataclass
class Tick:
    t: float  # seconds since the generator's start
    replicas: int  # replicas holding a cgroup (serving, starting or draining)
    ready: int
    limit_cores: float
    request_cores: float
    used_cores: float  # this tick's interval
    sent_rps: float
    runq_p95_seconds: float | None
    throttled_ratio: float | None


@dataclass
class RunResult:
    policy: str
    repeat: int
    seconds: float
    records: Records
    ticks: list[Tick]
    decisions: int  # recommendations that changed something (and were applied)
    decide_calls: int
    actuations: list[dict] = field(default_factory=list)

    def requests(self) -> Requests:
        r = self.records
        return Requests(r.scheduled, r.latency, r.ok, r.late)

    def timeline(self) -> Timeline:
        ts = [k for k in self.ticks if k.t >= 0] or self.ticks[-1:]
        prev = [k for k in self.ticks if k.t < 0]
        if prev:  # the state holding at t = 0
            ts = [replace(prev[-1], t=0.0)] + ts
        elif ts:  # no tick before the start: the first one's state held from 0
            ts = [replace(ts[0], t=0.0)] + ts[1:]
        # a tick's usage covers the interval ending at its t: shift it onto the interval start
        t = np.array([k.t for k in ts])
        used = np.array([k.used_cores for k in ts])
        used = np.append(used[1:], used[-1:]) if used.size else used
        return Timeline(t, np.array([k.replicas for k in ts], dtype=float),
                        np.array([k.limit_cores for k in ts]), used)


def interval_totals(cgroups: Iterable[CgroupSample]) -> tuple[np.ndarray | None, int, int]:
    """One interval of these cgroups together: the merged wait histogram (None: no cgroup),
    CFS periods throttled and CFS periods."""
    slots, thr_n, thr_d = None, 0, 0
    for cs in cgroups:
        slots = cs.delta.slots.copy() if slots is None else slots + cs.delta.slots
        b, a = cs.cpu_before, cs.cpu
        if a and b and a.nr_periods is not None and b.nr_periods is not None:
            thr_d += a.nr_periods - b.nr_periods
            thr_n += (a.nr_throttled or 0) - (b.nr_throttled or 0)
    return slots, thr_n, thr_d


@dataclass(frozen=True)
class WindowSignals:
    runq_p95_seconds: float | None
    throttled_ratio: float  # 0 when no CFS period ran (no quota)
    cpu_usage_cores: float
    request_rate: float


def window_signals(win: Iterable[tuple]) -> WindowSignals:
    """The signals over the last ticks, each `(slots, CPU seconds used, seconds, periods
    throttled, periods, requests sent)`: p95 of the merged histogram, Σ throttled / Σ periods,
    cores and requests/s over the window's time."""
    win = list(win)
    total = None
    for s_, *_rest in win:
        if s_ is not None:
            total = s_.copy() if total is None else total + s_
    wdt = sum(w[2] for w in win)
    tn, td = sum(w[3] for w in win), sum(w[4] for w in win)
    return WindowSignals(quantile_seconds(total, 0.95) if total is not None else None,
                         tn / td if td > 0 else 0.0, sum(w[1] for w in win) / wdt,
                         sum(w[5] for w in win) / wdt)


class LoadgenWatch:
    """The open-loop generator's progress lines, read on a thread: requests `sent` so far and
    the schedule's time 0 (unix seconds); `records()` waits for its end and loads its results."""

    def __init__(self, proc: subprocess.Popen, records_path: str) -> None:
        self.proc, self.records_path = proc, records_path
        self.status: dict = {"sent": 0}
        self.start_wall: list[float] = []
        self.launched = time.time()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if "start" in obj:
                self.start_wall.append(float(obj["start"]))
            else:
                self.status.update(obj)

    @property
    def sent(self) -> int:
        return int(self.status.get("sent", 0))

    @property
    def t0(self) -> float:
        """Unix seconds of the schedule's 0 (the launch until the generator says)."""
        return self.start_wall[0] if self.start_wall else self.launched

    def done(self) -> bool:
        return self.proc.poll() is not None

    def records(self) -> Records:
        self._reader.join(timeout=5)
        self.proc.wait()
        if self.proc.returncode != 0:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the load generator failed ({self.proc.returncode}): "
                               f"{err.strip()[-300:]}")
        rec = Records.load(self.records_path)
        os.unlink(self.records_path)
        return rec


class Environment:
    """Sandbox + nginx + actuator for one invocation (reused by every run)."""

    def __init__(self, probe: Probe, mounts: CgroupMounts, cfg: LoopConfig,
                 name: str = "runqscale-validate") -> None:
        if probe.hierarchy is Hierarchy.V2:
            cpu_ctl = os.path.join(mounts.v2 or "", "cgroup.controllers")
            with open(cpu_ctl) as f:
                if "cpu" not in f.read().split():
                    raise RuntimeError("the cgroup2 hierarchy has no cpu controller, which CPU "
                                       "quotas need: enable it in cgroup.subtree_control or "
                                       "use --hierarchy v1")
        self.probe, self.mounts, self.cfg = probe, mounts, cfg
        self.sb = Sandbox(probe.hierarchy, name=name, mounts=mounts)
        try:
            set_base_shares(self.sb, float(os.cpu_count() or 1))
            self.infra = self.sb.group("infra")
            set_shares(self.sb, self.infra, 4.0)
            self.nginx = Nginx(read_timeout_s=cfg.request_timeout_seconds + 5,
                               spawn=lambda argv: self.sb.spawn(self.infra, argv=argv))
            self.nginx.start([])
            self.act = LocalActuator(
                self.sb, self.nginx, "replicas",
                argv=lambda port, n: runlang_argv(port, n, cfg.request_timeout_seconds))
        except BaseException:
            self.sb.close()
            raise

    def reset(self, state: CurrentState) -> None:
        a = self.act.set_state(state)
        if a.error:
            raise RuntimeError(f"could not set up the replicas: {a.error}")
        deadline = time.monotonic() + self.act.drain_timeout_s + 1
        while self.act.alive() > len(self.act.replicas) and time.monotonic() < deadline:
            time.sleep(0.1)

    def loadgen(self, args: list[str]) -> subprocess.Popen:
        argv = [sys.executable, "-m", "runqscale.validation.loadgen", "--url", self.nginx.url,
                "--timeout", str(self.cfg.request_timeout_seconds), "--source", self.cfg.source,
                *args]
        return self.sb.spawn(self.infra, argv=argv, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)

    def measure_capacity(self, seconds: float = 8.0) -> dict:
        """Closed-loop throughput of `max_replicas` replicas at the initial size."""
        cfg = self.cfg
        self.reset(CurrentState(cfg.max_replicas, cfg.replica_cpu, cfg.replica_cpu))
        workers = max(4, 3 * cfg.max_replicas)
        p = self.loadgen(["--closed", str(workers), "--seconds", str(seconds)])
        out, err = p.communicate(timeout=seconds + 60)
        if p.returncode != 0:
            raise RuntimeError(f"capacity measurement failed: {err.strip()[-300:]}")
        res = json.loads(out.strip().splitlines()[-1])
        res.update(replicas=cfg.max_replicas, cpu_per_replica=cfg.replica_cpu)
        return res

    def close(self) -> None:
        try:
            self.act.close()
        finally:
            try:
                self.nginx.stop()
            finally:
                self.sb.close()

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_usage(mounts: CgroupMounts, hier: Hierarchy, rel: str) -> float | None:
    """Cumulative CPU seconds of a cgroup tree (hierarchical: children that left still count)."""
    st = read_cpu_stat(mounts, hier, rel)
    return st.usage_seconds if st else None


def decide_fn(name: str, cfg: LoopConfig) -> tuple[Callable, float]:
    pol = policies.get(name)
    fn = pol.decide
    if name == "static":
        fn = functools.partial(static.decide, params=static.Params(
            replicas=cfg.static_replicas or cfg.max_replicas,
            cpu_request_cores=cfg.replica_cpu, cpu_limit_cores=cfg.replica_cpu))
    return fn, pol.period_seconds


def run_policy(env: Environment, policy: str, repeat: int, sched_path: str, seconds: float,
               out_dir: str, on_tick: Callable[[Tick], None] | None = None) -> RunResult:
    cfg = env.cfg
    decide, period = decide_fn(policy, cfg)
    scfg = cfg.scaler_config()
    env.reset(cfg.initial_state(policy))
    time.sleep(cfg.settle_seconds)
    act, sb = env.act, env.sb
    parent = act.parent
    sampler = Sampler(env.probe, env.mounts, sb.root, only=[parent.rel])
    sampler.sample()
    rec_path = os.path.join(out_dir, f"recommendations-{policy}-{repeat}.jsonl")
    records_path = os.path.join(out_dir, f".records-{policy}-{repeat}.npz")
    lg = LoadgenWatch(env.loadgen(["--schedule", sched_path, "--out", records_path]),
                      records_path)

    win: deque = deque(maxlen=max(1, round(cfg.signal_window_seconds / cfg.tick_seconds)))
    samples: deque[Sample] = deque(maxlen=int(900 / cfg.tick_seconds))
    ticks: list[Tick] = []
    actuations: list[dict] = []
    state = None
    decisions = calls = 0
    usage_prev = _read_usage(env.mounts, sb.hierarchy, parent.rel)
    sent_prev, t_prev = 0, time.monotonic()
    next_tick = time.monotonic() + cfg.tick_seconds
    next_decision = time.monotonic() + period
    while True:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        next_tick += cfg.tick_seconds
        now_m = time.monotonic()
        dt = max(1e-6, now_m - t_prev)
        t_prev = now_m
        slots, thr_n, thr_d = interval_totals(sampler.sample().cgroups)
        usage = _read_usage(env.mounts, sb.hierarchy, parent.rel)
        used_s = (usage - usage_prev) if usage is not None and usage_prev is not None else 0.0
        usage_prev = usage
        sent = lg.sent
        win.append((slots, used_s, dt, thr_n, thr_d, sent - sent_prev))
        sent_prev = sent
        sig = window_signals(win)
        cur = act.current()
        alive = act.alive()
        ts = time.time()
        t0 = lg.t0
        tick = Tick(ts - t0, alive, act.ready_replicas, cur.cpu_limit_cores or 0.0,
                    cur.cpu_request_cores or 0.0, used_s / dt, win[-1][5] / dt,
                    sig.runq_p95_seconds, sig.throttled_ratio)
        ticks.append(tick)
        samples.append(Sample(
            ts=ts, workload=WORKLOAD, replicas=cur.replicas, ready_replicas=act.ready_replicas,
            cpu_usage_cores=sig.cpu_usage_cores,
            cpu_request_cores=cur.cpu_request_cores, cpu_limit_cores=cur.cpu_limit_cores,
            runq_p95_seconds=sig.runq_p95_seconds, throttled_ratio=sig.throttled_ratio,
            request_rate=sig.request_rate))
        if on_tick:
            on_tick(tick)
        if lg.done():
            break
        if time.monotonic() >= next_decision and tick.t >= 0:
            next_decision += period
            window = SignalWindow.from_samples(list(samples))
            rec, state = decide(window, cur, scfg, state)
            calls += 1
            if rec.recommended != cur:
                a = act.apply(rec)
                rec = replace(rec, dry_run=False, applied=a.error is None, error=a.error)
                decisions += a.error is None
                actuations.append({"t": ts - t0, **asdict(a), "before": a.before.to_json(),
                                   "after": a.after.to_json()})
            else:
                rec = replace(rec, dry_run=False, applied=False)
            reclog.append(rec_path, [rec])
    records = lg.records()
    return RunResult(policy, repeat, seconds, records, ticks, decisions, calls, actuations)
