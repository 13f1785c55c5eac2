"""`runqscale validate --trace ... --policies ...`: policies one after another on the same trace
segment, in one invocation, repeated; scored, reported, plotted.

Order: load and check the trace, start the environment (nginx, replica cgroups), measure the
capacity of `max_replicas` replicas (closed loop), scale the segment so its peak is
`peak_fraction` × that capacity, then for each repeat one schedule (seeded) replayed against
every policy in turn. `report.json` is rewritten after every run, so an interrupted comparison
still leaves what it measured.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from runqscale.probes.backends import Probe
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.validation import report as rpt
from runqscale.validation import traces
from runqscale.validation.loop import Environment, LoopConfig, RunResult, Tick, run_policy
from runqscale.validation.scoring import RunScore, score


@dataclass(frozen=True)
class CompareConfig:
    trace_path: str
    policies: tuple[str, ...]
    duration_s: float
    repeats: int
    out_dir: str
    slo_seconds: float = 0.5
    segment_start_s: float = 0.0
    segment_length_s: float | None = None
    time_warp: float | None = None
    peak_fraction: float = 0.8
    capacity_rps: float | None = None  # skip the measurement when given
    capacity_seconds: float = 8.0
    seed: int = 0
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
    peak_rps: float
    scaling: str  # the same in words, for the log and details.json


def plan_replay(trace: traces.Trace, path: str, capacity_rps: float, capacity_words: str,
                peak_fraction: float, duration_s: float, start_s: float,
                length_s: float | None, time_warp: float | None) -> Replay:
    """Map the segment's p99 step rate onto `peak_fraction` × the measured capacity."""
    peak_rps = peak_fraction * capacity_rps
    seg = traces.choose_segment(trace, duration_s, peak_rps, start_s, length_s, time_warp)
    rates = traces.real_rates(trace, seg)
    scaling = (f"capacity {capacity_rps:.1f} req/s {capacity_words}; the segment's p99 step "
               f"rate {seg.peak_trace_rps:.1f} trace req/s -> {peak_rps:.1f} req/s "
               f"({peak_fraction:g} × capacity): scale {seg.scale:.5f}; time-warp "
               f"{seg.time_warp:g}× ({seg.trace_seconds / 3600:.2f} trace hours in "
               f"{duration_s:g} s); mean {rates.mean():.1f} req/s, max {rates.max():.1f}")
    return Replay(seg, rates, rpt.trace_info(path, trace, seg), peak_rps, scaling)


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
    with Environment(probe, mounts, cfg.loop) as env:
        if cfg.capacity_rps is None:
            pr.say(f"measuring the capacity of {cfg.loop.max_replicas} replicas × "
                   f"{cfg.loop.replica_cpu:g} core (closed loop, {cfg.capacity_seconds:g} s)...")
            cap = env.measure_capacity(cfg.capacity_seconds)
        else:
            cap = {"rps": cfg.capacity_rps, "given": True}
        if not cap["rps"] > 0:
            raise RuntimeError(f"the replicas served nothing during the capacity measurement "
                               f"({cap}); see nginx's error log")
        plan = plan_replay(trace, cfg.trace_path, cap["rps"],
                           f"at {cfg.loop.max_replicas} replicas × {cfg.loop.replica_cpu:g} core",
                           cfg.peak_fraction, cfg.duration_s, cfg.segment_start_s,
                           cfg.segment_length_s, cfg.time_warp)
        seg, rates, info, peak_rps, scaling = (plan.seg, plan.rates, plan.info, plan.peak_rps,
                                               plan.scaling)
        pr.say(f"trace {cfg.trace_path} {info.segment['start']} .. {info.segment['end']}: "
               f"{scaling}")
        details.update(capacity=cap, scaling=scaling, peak_rps=peak_rps,
                       rates_per_second=rates.tolist())
        for rep in range(cfg.repeats):
            sched = traces.schedule(rates, 1.0, seed=cfg.seed + rep)
            sched_path = os.path.join(cfg.out_dir, f".schedule-{rep}.npy")
            np.save(sched_path, sched)
            for pol in cfg.policies:
                pr.say(f"repeat {rep + 1}/{cfg.repeats}: {pol} ({sched.size} requests, "
                       f"{cfg.duration_s:g} s)")
                res = run_policy(env, pol, rep, sched_path, cfg.duration_s, cfg.out_dir,
                                 on_tick=lambda t, p=pol, r=rep: pr.tick(p, r, t))
                s = score(res.requests(), res.timeline(), cfg.duration_s, cfg.slo_seconds)
                runs.append(rpt.run_entry(pol, rep, s, res.decisions))
                details["runs"].append(_details(res, s))
                if rep == 0:
                    series[pol] = _series(res)
                pr.say(_line(pol, rep, s, res))
                rpt.write_json(os.path.join(cfg.out_dir, "report.json"),
                               rpt.build_report(info, cfg.slo_seconds, runs))
                rpt.write_json(os.path.join(cfg.out_dir, "details.json"), details)
            os.unlink(sched_path)
    report = rpt.build_report(info, cfg.slo_seconds, runs)
    title = (f"{os.path.basename(cfg.trace_path)} {info.segment['start']} .. "
             f"{info.segment['end']}, scale {seg.scale:.4f}, warp {seg.time_warp:g}×, "
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
            "replicas": tl.replicas, "allocated": tl.replicas * tl.limit_cores,
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
