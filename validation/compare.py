"""`runqscale validate --trace ... --policies ...`: policies on the same trace segment, in one
invocation, in paired repeats; scored, compared, reported, plotted.

Order: load the trace, pick the segment (the busiest window the run covers at <= 60x, unless
given), start the environment (nginx, replica cgroups), measure the CPU per request of the
starting deployment open loop (runqscale.validation.capacity), map the segment onto 0.3..1.4 x
its capacity, then per repeat one schedule (seeded) replayed against every policy, in ABBA order
(the order reverses every repeat, so drift and warm-up do not favour one side). Every policy
starts from the same size, bounds, target and actuator. The host's disturbance is logged per run
and the fixed rule (runqscale.validation.host) excludes disturbed runs. `report.json` is
rewritten after every run, so an interrupted comparison still leaves what it measured.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from runqscale.probes.backends import Probe
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.validation import capacity as capmod
from runqscale.validation import host, load_shape, stats, traces
from runqscale.validation import report as rpt
from runqscale.validation.loop import Environment, LoopConfig, RunResult, Tick, run_policy
from runqscale.validation.scoring import RunScore, score

if TYPE_CHECKING:  # a cycle at run time: dsb_compare imports this module
    from runqscale.validation.dsb_compare import DsbCompareConfig


@dataclass(frozen=True)
class CompareConfig:
    trace_path: str
    policies: tuple[str, ...]
    duration_s: float
    repeats: int
    out_dir: str
    slo_seconds: float = 0.5
    segment_start_s: float | None = None  # None: the busiest window
    segment_length_s: float | None = None  # None: what the run covers at <= max_warp
    time_warp: float | None = None
    max_warp: float = 60.0
    peak_fraction: float = capmod.PEAK_FRACTION
    trough_fraction: float = capmod.TROUGH_FRACTION
    capacity_rps: float | None = None  # skip the measurement when given
    probe_rate_rps: float = 3.0  # the light open-loop rate CPU per request is measured at
    probe_seconds: float = 15.0  # ~45 requests: one slow subprocess start does not swing it
    capacity_repeats: int = capmod.CAPACITY_REPEATS  # light/loaded pairs; the median kept
    seed: int = 0
    baselines: tuple[str, ...] = stats.DEFAULT_BASELINES
    exclusion: host.ExclusionRule = field(default_factory=host.ExclusionRule)
    loop: LoopConfig = LoopConfig()


@dataclass
class Progress:
    """Callbacks for the CLI: a line of text, and each tick of each run."""

    say: Callable[[str], None] = lambda _m: None
    tick: Callable[[str, int, Tick], None] = lambda _p, _r, _t: None


@dataclass(frozen=True)
class Replay:
    """The trace segment to replay and how it was scaled onto this machine."""

    seg: traces.Segment
    rates: np.ndarray  # requests/s per real second
    info: rpt.TraceInfo
    plan: capmod.LoadPlan
    scaling: str  # the same in words, for the log and details.json
    shape: load_shape.LoadShape  # how much of the replayed load is trend, how much noise


def plan_replay(trace: traces.Trace, path: str, capacity_rps: float, capacity_words: str,
                cfg: CompareConfig) -> Replay:
    """The segment (busiest window unless given) mapped onto trough..peak x the capacity."""
    seg, base, plan = capmod.plan_segment(
        trace, cfg.duration_s, capacity_rps, cfg.peak_fraction, cfg.trough_fraction,
        cfg.segment_start_s, cfg.segment_length_s, cfg.time_warp, cfg.max_warp)
    rates = plan.apply(base)
    seg = replace(seg, scale=plan.scale, peak_trace_rps=plan.trace_high_rps,
                  peak_rps=float(plan.apply(np.array([plan.trace_high_rps]))[0]))
    scaling = (f"capacity {capacity_rps:.1f} req/s {capacity_words}; the segment's p01..p99 "
               f"{plan.trace_low_rps:.1f}..{plan.trace_high_rps:.1f} trace req/s -> "
               f"{cfg.trough_fraction:g}..{cfg.peak_fraction:g} x capacity: scale "
               f"{plan.scale:.5f}, offset {plan.offset_rps:+.2f} req/s; time-warp "
               f"{seg.time_warp:g}x ({seg.trace_seconds / 3600:.2f} trace hours in "
               f"{cfg.duration_s:g} s); mean {rates.mean():.1f} req/s, max {rates.max():.1f}")
    shape = load_shape.load_shape(base, plan)
    return Replay(seg, rates, rpt.trace_info(path, trace, seg), plan, scaling, shape)


def abba_order(policies: Sequence[str], repeat: int) -> list[str]:
    """A B ... in even repeats, ... B A in odd ones: paired runs interleaved ABBA."""
    return list(policies) if repeat % 2 == 0 else list(policies)[::-1]


def checked_entry(entry: dict, before: host.HostSnapshot, own: host.OwnCpu,
                  own_before: tuple[float, float], rule: host.ExclusionRule, order: int) -> dict:
    """A run's report entry with its host disturbance, position in the repeat, and the
    exclusion reason (None: kept)."""
    u, s = own.read()
    h = host.disturbance(before, host.snapshot(), u - own_before[0], s - own_before[1],
                         own.niced)
    return {**entry, "order": order, "host": h, "excluded": rule.reason(h)}


def fairness(cfg: CompareConfig | DsbCompareConfig, start: dict) -> dict:
    """What every policy of a comparison shares (runlang's and DSB's loop configs carry the same
    bounds and targets)."""
    lc = cfg.loop
    return {"order": "ABBA", "start": start,
            "bounds": {"min_replicas": lc.min_replicas, "max_replicas": lc.max_replicas,
                       "max_cpu_per_replica": lc.max_cpu_per_replica},
            "targets": {"runq_p95_seconds": lc.target_runq_p95_seconds,
                        "cpu_utilization": lc.target_cpu_utilization,
                        "showar_margin_sigma": lc.showar_margin,
                        "showar_replica_max_cores": lc.showar_replica_max,
                        "showar_floor_cores": lc.showar_floor},
            "actuator": "local", "exclusion_rule": cfg.exclusion.to_json(),
            "baselines": list(cfg.baselines)}


def run_comparison(probe: Probe, mounts: CgroupMounts, cfg: CompareConfig,
                   progress: Progress | None = None) -> dict:
    pr = progress or Progress()
    trace = traces.load_trace(cfg.trace_path)
    os.makedirs(cfg.out_dir, exist_ok=True)
    for name in os.listdir(cfg.out_dir):
        if name.startswith("recommendations-") and name.endswith(".jsonl"):
            os.unlink(os.path.join(cfg.out_dir, name))  # the log is append-only: start fresh
    runs: list[dict] = []
    details: dict = {"config": _jsonable(asdict(cfg)), "runs": []}
    series: dict[str, dict] = {}
    lc = cfg.loop
    start = lc.initial_state("")
    with Environment(probe, mounts, lc) as env:
        alloc = start.replicas * (start.cpu_limit_cores or 0.0)
        own = env.own_cpu()
        if cfg.capacity_rps is None:
            times = "" if cfg.capacity_repeats == 1 else \
                f"; the pair {cfg.capacity_repeats} times, the median kept"
            pr.say(f"measuring CPU per request of {start.replicas} replicas x "
                   f"{lc.replica_cpu:g} core (open loop, {cfg.probe_rate_rps:g} req/s, then "
                   f"about half the capacity, {cfg.probe_seconds:g} s each{times})...")
            env.reset(start)
            cap = capmod.measure_capacity(
                env.loadgen, lambda: {"replicas": env.usage()["replicas"]},
                {"replicas": alloc}, cfg.probe_rate_rps, cfg.probe_seconds,
                seed=cfg.seed + 7919, repeats=cfg.capacity_repeats, say=pr.say)
        else:
            cap = {"rps": cfg.capacity_rps, "given": True}
        plan = plan_replay(trace, cfg.trace_path, cap["rps"],
                           f"at {start.replicas} replicas x {lc.replica_cpu:g} core", cfg)
        seg, rates, info = plan.seg, plan.rates, plan.info
        pr.say(f"trace {cfg.trace_path} {info.segment['start']} .. {info.segment['end']}: "
               f"{plan.scaling}")
        pr.say(load_shape.describe(plan.shape))
        extra = {
            "load": {**plan.plan.to_json(), "shape": plan.shape, "allocated_cores": alloc,
                     "cpu_seconds_per_request": cap.get("cpu_seconds_per_request", {}).get(
                         "replicas"),
                     "idle_cores": cap.get("idle_cores", {}).get("replicas"),
                     "probe_rate_rps": cap.get("rate_rps"),
                     "loaded_probe_rate_rps": cap.get("loaded_rate_rps"),
                     "single_rate_capacity_rps": cap.get("single_rate_rps"),
                     "capacity_repeats_rps": cap.get("repeats_rps"),
                     "capacity_given": bool(cap.get("given"))},
            "fairness": fairness(cfg, start.to_json()),
        }
        details.update(capacity=cap, scaling=plan.scaling, rates_per_second=rates.tolist())

        def write() -> dict:
            load = {**extra["load"], "realised": capmod.realised_load(runs, alloc, cap["rps"])}
            rep = rpt.build_report(info, cfg.slo_seconds, runs, cfg.baselines,
                                   {**extra, "load": load})
            rpt.write_json(os.path.join(cfg.out_dir, "report.json"), rep)
            rpt.write_json(os.path.join(cfg.out_dir, "details.json"), details)
            return rep

        for rep in range(cfg.repeats):
            sched = traces.schedule(rates, 1.0, seed=cfg.seed + rep)
            sched_path = os.path.join(cfg.out_dir, f".schedule-{rep}.npy")
            np.save(sched_path, sched)
            for order, pol in enumerate(abba_order(cfg.policies, rep)):
                pr.say(f"repeat {rep + 1}/{cfg.repeats}: {pol} ({sched.size} requests, "
                       f"{cfg.duration_s:g} s)")
                before, own0 = host.snapshot(), own.read()
                res = run_policy(env, pol, rep, sched_path, cfg.duration_s, cfg.out_dir,
                                 on_tick=lambda t, p=pol, r=rep: pr.tick(p, r, t))
                s = score(res.requests(), res.timeline(), cfg.duration_s, cfg.slo_seconds)
                entry = checked_entry(rpt.run_entry(pol, rep, s, res.decisions), before, own,
                                      own0, cfg.exclusion, order)
                runs.append(entry)
                details["runs"].append(_details(res, s))
                if rep == 0:
                    series[pol] = _series(res)
                pr.say(_line(pol, rep, s, res) + (f"; EXCLUDED: {entry['excluded']}"
                                                  if entry["excluded"] else ""))
                write()
            os.unlink(sched_path)
    report = write()
    title = (f"{os.path.basename(cfg.trace_path)} {info.segment['start']} .. "
             f"{info.segment['end']}, scale {seg.scale:.4f}, warp {seg.time_warp:g}x, "
             f"{cfg.repeats} repeat(s), SLO {cfg.slo_seconds:g} s")
    rpt.plot_timelines(os.path.join(cfg.out_dir, "timeline.png"), series, cfg.slo_seconds, title)
    rpt.plot_scores(os.path.join(cfg.out_dir, "scores.png"), report["summary"], title)
    return report


def _line(pol: str, rep: int, s: RunScore, res: RunResult) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1e3:.0f} ms"

    return (f"  {pol} #{rep + 1}: {s.requests} req, {s.failed} failed, {s.late} late sends; "
            f"p50 {ms(s.p50_seconds)} p99 {ms(s.p99_seconds)}; SLO viol "
            f"{s.slo_violation_ratio:.1%}; {s.cpu_core_seconds_allocated:.0f} core-s allocated, "
            f"{s.cpu_core_seconds_used:.0f} used; {s.mean_replicas:.2f} replicas; "
            f"{res.decisions} decisions; penalty {s.penalty.total:.3f} "
            f"(latency {s.penalty.latency:.3f} + failures {s.penalty.failures:.3f} + replicas "
            f"{s.penalty.replicas:.3f})")


def _series(res: RunResult) -> dict:
    tl = res.timeline()
    r = res.records
    lat_t, p50, p99 = rpt.latency_series(r.scheduled, r.latency, r.ok)
    load = np.array([k.sent_rps for k in res.ticks if k.t >= 0])
    t_load = np.array([k.t for k in res.ticks if k.t >= 0])
    return {"t": tl.t, "load": np.interp(tl.t, t_load, load) if t_load.size else tl.t * 0,
            "replicas": tl.replicas, "allocated": tl.allocated(),
            "used": tl.used_cores, "lat_t": lat_t, "p50": p50, "p99": p99}


def _details(res: RunResult, s: RunScore) -> dict:
    delays = [a["delay_seconds"] for a in res.actuations]
    return {
        "policy": res.policy, "repeat": res.repeat, "late_sends": s.late,
        "decide_calls": res.decide_calls, "decisions": res.decisions,
        "actuation_delay_seconds": {"mean": float(np.mean(delays)) if delays else None,
                                    "max": max(delays) if delays else None,
                                    "count": len(delays)},
        "actuations": _jsonable(res.actuations),
        "ticks": [_jsonable(asdict(k)) for k in res.ticks],
    }


def _jsonable(o):  # noqa: ANN001, ANN202 - JSON-safe copy (NaN -> None, tuples -> lists)
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o
