"""The local closed loop: real replicas behind nginx, the open-loop generator replaying a trace,
the agent's Sampler measuring, the decision routine deciding, the local actuator acting.

Every tick (1 s) the loop reads the probe (run-queue histograms of every replica cgroup, merged)
and the replicas' CPU accounting, and appends one signals `Sample` for the workload. The signals
in a sample are over the last `signal_window_seconds` (3 s by default): run-queue p95 of the merged
histogram, Σ wait and Σ throttled seconds per second, CPU pressure (v2), CPU usage (total over
replicas, from the parent cgroup's cpuacct, so replicas that left are still counted), throttled
ratio (Σ throttled periods / Σ periods) and the request rate the generator sent. The loop keeps
no policy state, timing or log of its own: it hands the window and the current size to the one
decision routine (runqscale.scaler.routine), which decides when due, applies through the
actuator and writes the recommendations log.

Nginx and the generator run in their own cgroup (`infra`, cpu.shares 4096 so they keep up),
outside the measured `replicas` tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from runqscale.agent.sampler import Sampler
from runqscale.probes.backends import Probe
from runqscale.probes.cgroupfs import CgroupMounts, read_cpu_stat
from runqscale.probes.model import Hierarchy
from runqscale.scaler.actuators.cgroups import Sandbox, set_base_shares, set_shares
from runqscale.scaler.actuators.local import LocalActuator
from runqscale.scaler.model import CurrentState, ScalerConfig, SignalWindow, WorkloadRef
from runqscale.scaler.policies.showar_sizing import SizingParams
from runqscale.scaler.routine import DecisionRoutine
from runqscale.validation.drive import LocalApply, policy_for
from runqscale.validation.host import OwnCpu
from runqscale.validation.loadgen import Records
from runqscale.validation.nginx import Nginx
from runqscale.validation.runlang_service import DEFAULT_SOURCE, runlang_argv
from runqscale.validation.scoring import Requests, Timeline
from runqscale.validation.window import (
    Tally,
    interval_totals,
    make_sample,
    signal_fields,
    window_signals,
)

WORKLOAD = WorkloadRef("validate", "runlang")


@dataclass(frozen=True)
class LoopConfig:
    min_replicas: int = 1
    max_replicas: int = 4
    initial_replicas: int = 2
    static_replicas: int | None = None  # None: max_replicas (provisioned for the peak)
    replica_cpu: float = 0.4  # initial request = limit per replica (cores)
    max_cpu_per_replica: float = 1.0
    # one default for every caller: the library's (ScalerConfig)
    target_cpu_utilization: float = ScalerConfig.target_cpu_utilization
    target_runq_p95_seconds: float = ScalerConfig.target_runq_p95_seconds
    showar_margin: float = SizingParams.sigma_k  # showar's limit = demand + this many sigma
    showar_replica_max: float | None = None  # showar's largest replica (None: the bound)
    showar_floor: float | None = None  # showar's smallest limit (None: the library's)
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
    runq_wait_seconds_per_second: float = 0.0
    throttled_seconds_per_second: float = 0.0


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
                        np.array([k.limit_cores for k in ts]), used,
                        request_cores=np.array([k.request_cores for k in ts]),
                        node_cpus=float(os.cpu_count() or 1))


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

    def wait_start(self, timeout_s: float = 30.0) -> float:
        """Returns at the schedule's 0 (the generator announces it 50 ms ahead) with that time
        on the monotonic clock, for the loops to tick from; now if the generator ended first
        (`records` says why)."""
        deadline = time.monotonic() + timeout_s
        while not self.start_wall:
            if self.done():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the load generator announced no start in {timeout_s:g} s")
            time.sleep(0.005)
        start = time.monotonic() + (self.start_wall[0] - time.time())
        time.sleep(max(0.0, start - time.monotonic()))
        return start

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

    def own_cpu(self) -> OwnCpu:
        """The benchmark's own CPU: the whole sandbox (replicas, nginx, generator) + this
        process."""
        v2 = self.sb.hierarchy is Hierarchy.V2
        base = self.mounts.v2 if v2 else self.mounts.v1_cpuacct
        return OwnCpu(base + self.sb.base if base else None, v2)

    def usage(self) -> dict[str, float]:
        """Cumulative CPU seconds of the replicas (`replicas`) and of the whole sandbox (`all`:
        replicas, nginx and the generator)."""
        rep = read_cpu_stat(self.mounts, self.sb.hierarchy, self.act.parent.rel)
        root = read_cpu_stat(self.mounts, self.sb.hierarchy, self.sb.base)
        return {"replicas": rep.usage_seconds or 0.0 if rep else 0.0,
                "all": root.usage_seconds or 0.0 if root else 0.0}

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




def run_policy(env: Environment, policy: str, repeat: int, sched_path: str, seconds: float,
               out_dir: str, on_tick: Callable[[Tick], None] | None = None) -> RunResult:
    cfg = env.cfg
    pol = policy_for(policy, cfg.initial_state("static"), cfg.showar_margin,
                     cfg.showar_replica_max, cfg.showar_floor)
    scfg = cfg.scaler_config()
    env.reset(cfg.initial_state(policy))
    time.sleep(cfg.settle_seconds)
    act, sb = env.act, env.sb
    adapter = LocalApply({WORKLOAD.name: act})
    routine = DecisionRoutine(
        adapter, os.path.join(out_dir, f"recommendations-{policy}-{repeat}.jsonl"), resume=False)
    sampler = Sampler(env.probe, env.mounts, sb.root, only=[act.parent.rel])
    records_path = os.path.join(out_dir, f".records-{policy}-{repeat}.npz")
    lg = LoadgenWatch(env.loadgen(["--schedule", sched_path, "--out", records_path]),
                      records_path)
    win: deque[Tally] = deque(maxlen=max(1, round(cfg.signal_window_seconds / cfg.tick_seconds)))
    samples: deque = deque(maxlen=int(900 / cfg.tick_seconds))
    ticks: list[Tick] = []
    calls = 0
    # ticks start at the schedule's 0, so the first one reads a whole second of load (it read
    # 0.79-0.87 s of it, and so 13-21 % less usage, while the generator started up: stop 31)
    start = lg.wait_start()
    sampler.sample()
    usage_prev = env.usage()["replicas"]
    sent_prev, t_prev = lg.sent, time.monotonic()
    next_tick = start + cfg.tick_seconds
    while True:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        next_tick += cfg.tick_seconds
        now_m = time.monotonic()
        dt, t_prev = max(1e-6, now_m - t_prev), now_m
        usage = env.usage()["replicas"]
        sent = lg.sent
        win.append(replace(interval_totals(sampler.sample().cgroups),
                           used_seconds=max(0.0, usage - usage_prev), seconds=dt,
                           sent=sent - sent_prev))
        usage_prev, sent_prev = usage, sent
        sig = window_signals(win)
        cur = act.current()
        ts = time.time()
        adapter.t0 = t0 = lg.t0
        tick = Tick(ts - t0, act.alive(), act.ready_replicas, cur.cpu_limit_cores or 0.0,
                    cur.cpu_request_cores or 0.0, win[-1].used_seconds / dt,
                    win[-1].sent / dt, sig.runq_p95_seconds, sig.throttled_ratio,
                    sig.runq_wait_seconds_per_second, sig.throttled_seconds_per_second)
        ticks.append(tick)
        samples.append(make_sample(
            ts=ts, workload=WORKLOAD, replicas=cur.replicas, ready_replicas=act.ready_replicas,
            cpu_request_cores=cur.cpu_request_cores, cpu_limit_cores=cur.cpu_limit_cores,
            **signal_fields(sig)))
        if on_tick:
            on_tick(tick)
        if lg.done():
            break
        # the routine owns when the policy is due (its period on the monotonic clock)
        if tick.t >= 0 and routine.due(WORKLOAD, pol, scfg, now_m):
            d = routine.decide(SignalWindow.from_samples(list(samples)), cur, pol, scfg, now_m)
            calls += d is not None
    records = lg.records()
    return RunResult(policy, repeat, seconds, records, ticks, adapter.applied, calls,
                     adapter.actuations)
