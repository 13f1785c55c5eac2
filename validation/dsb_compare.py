"""`runqscale validate --app deathstarbench --trace ... --policies showar,hpa`: the emulated social
network (every logic service scaled on its own) under the mixed workload replaying a trace,
each policy in turn on the same requests; then the affinity experiment.

Order: start the cluster (stores seeded from the social graph, mesh nginx, one replica per
service at `cluster.cpu`), measure each service's idle CPU and CPU per request open loop at two
rates (three times, the stores reseeded before each, the median capacity kept), take the
starting deployment's capacity as the first service to run out (min over services of its
allocation less its idle CPU, over its CPU per request), map the segment onto 0.3..1.4 x that
capacity (the policies must scale both ways), run every policy x repeat from the same start in
ABBA order, with the host's disturbance logged and the fixed exclusion rule applied per run (as
compare.py).
Affinity: the SHOWAR rule (Pearson r of the services' CPU usage over the first policy's run)
gives co-locate/spread pairs; this machine's CPUs stand for two nodes; the same steady load runs
under the default spreading placement and under the placement that follows the pairs,
alternating, and the report gives both p99s.
`report.json` keeps design.md's contract (end-to-end figures; replicas and core-seconds summed
over the services); per-service series and the affinity experiment go to `details.json`.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from runqscale.deathstarbench.emulation.cluster import LOGIC_SERVICES, Cluster, ClusterConfig
from runqscale.deathstarbench.emulation.socialgraph import load_edges
from runqscale.deathstarbench.emulation.workload import KINDS
from runqscale.probes.backends import Probe
from runqscale.probes.cgroupfs import CgroupMounts, read_cpu_stat
from runqscale.probes.model import Hierarchy
from runqscale.scaler import affinity
from runqscale.scaler import log as reclog
from runqscale.scaler.model import CurrentState
from runqscale.validation import capacity as capmod
from runqscale.validation import host, load_shape, stats, traces
from runqscale.validation import report as rpt
from runqscale.validation.compare import (
    _jsonable,
    abba_order,
    checked_entry,
    fairness,
    plan_replay,
)
from runqscale.validation.dsb_loop import (
    DsbLoopConfig,
    DsbRun,
    DsbTick,
    run_policy,
    start_loadgen,
)
from runqscale.validation.placement import place, satisfied
from runqscale.validation.scoring import percentiles, score

NODES = ("0", "1")  # CPU lists: each CPU of this 2-core machine is a node


@dataclass(frozen=True)
class DsbCompareConfig:
    trace_path: str
    graph_path: str
    policies: tuple[str, ...]
    duration_s: float
    repeats: int
    out_dir: str
    slo_seconds: float = 0.5
    segment_start_s: float | None = None
    segment_length_s: float | None = None
    time_warp: float | None = None
    max_warp: float = 60.0
    peak_fraction: float = capmod.PEAK_FRACTION
    trough_fraction: float = capmod.TROUGH_FRACTION
    capacity_rps: float | None = None
    probe_rate_rps: float = 10.0
    probe_seconds: float = 10.0
    capacity_repeats: int = capmod.CAPACITY_REPEATS  # light/loaded pairs; the median kept
    seed: int = 0
    baselines: tuple[str, ...] = stats.DEFAULT_BASELINES
    exclusion: host.ExclusionRule = field(default_factory=host.ExclusionRule)
    affinity_seconds: float = 30.0  # per placement per round; 0 skips the experiment
    affinity_rounds: int = 2
    affinity_load_fraction: float = 0.8  # of the capacity of the starting deployment
    affinity_cpu: float = 1.0  # per service in the experiment (so placement, not quota, binds)
    loop: DsbLoopConfig = DsbLoopConfig()
    cluster: ClusterConfig = field(default_factory=lambda: ClusterConfig(cpu=0.1))


@dataclass
class DsbProgress:
    say: Callable[[str], None] = lambda _m: None
    tick: Callable[[str, int, DsbTick], None] = lambda _p, _r, _t: None


def run_dsb_comparison(probe: Probe, mounts: CgroupMounts, cfg: DsbCompareConfig,
                       progress: DsbProgress | None = None) -> dict:
    pr = progress or DsbProgress()
    trace = traces.load_trace(cfg.trace_path)
    graph = load_edges(cfg.graph_path)
    os.makedirs(cfg.out_dir, exist_ok=True)
    for name in os.listdir(cfg.out_dir):
        if name.startswith("recommendations-") and name.endswith(".jsonl"):
            os.unlink(os.path.join(cfg.out_dir, name))
    runs: list[dict] = []
    details: dict = {"app": "deathstarbench", "config": _jsonable(asdict(cfg)), "runs": []}
    series: dict[str, dict] = {}
    first: DsbRun | None = None
    pr.say(f"starting the social network: {len(LOGIC_SERVICES)} services, 13 stores seeded "
           f"from {graph.users} users / {graph.follows} follows ...")
    with Cluster(probe.hierarchy, mounts, cfg.cluster, graph) as c:
        c.reset()
        alloc = starting_allocation(cfg)
        if cfg.capacity_rps is None:
            pr.say(f"measuring each service's CPU per request at 1 replica x "
                   f"{cfg.cluster.cpu:g} core (open loop, {cfg.probe_rate_rps:g} req/s, then "
                   f"about half the capacity, {cfg.probe_seconds:g} s each; the pair "
                   f"{cfg.capacity_repeats}x, the stores reseeded before each, the median "
                   "kept)...")
            cap = measure_dsb_capacity(c, cfg, alloc, pr.say)
        else:
            cap = {"rps": cfg.capacity_rps, "given": True}
        plan = plan_replay(trace, cfg.trace_path, cap["rps"],
                           f"of the mix with 1 replica x {cfg.cluster.cpu:g} core per service "
                           + ("(given by --capacity)" if cap.get("given") else
                              f"(bottleneck {cap.get('bottleneck', '?')})"), cfg)
        seg, rates, info = plan.seg, plan.rates, plan.info
        pr.say(f"trace {cfg.trace_path} {info.segment['start']} .. {info.segment['end']}: "
               f"{plan.scaling}")
        pr.say(load_shape.describe(plan.shape))
        extra = {"load": {**plan.plan.to_json(), "shape": plan.shape,
                          "allocated_cores": sum(alloc.values()),
                          "cpu_seconds_per_request": cap.get("cpu_seconds_per_request"),
                          "idle_cores": cap.get("idle_cores"),
                          "loaded_probe_rate_rps": cap.get("loaded_rate_rps"),
                          "single_rate_capacity_rps": cap.get("single_rate_rps"),
                          "capacity_repeats_rps": cap.get("repeats_rps"),
                          "bottleneck": cap.get("bottleneck"),
                          "probe_rate_rps": cap.get("rate_rps"),
                          "capacity_given": bool(cap.get("given"))},
                 "fairness": fairness(cfg, {s: cfg.cluster.state(s).to_json()
                                            for s in LOGIC_SERVICES})}
        details.update(capacity=cap, scaling=plan.scaling, rates_per_second=rates.tolist())
        v2 = c.sb.hierarchy is Hierarchy.V2
        own_dir = mounts.v2 if v2 else mounts.v1_cpuacct
        own = host.OwnCpu(own_dir + c.sb.base if own_dir else None, v2)

        def write() -> dict:
            rep = rpt.build_report(info, cfg.slo_seconds, runs, cfg.baselines, extra)
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
                c.reseed()  # the same data for every run, not what earlier runs composed
                before, own0 = host.snapshot(), own.read()
                c.reset()
                time.sleep(cfg.loop.settle_seconds)
                res = run_policy(c, probe, cfg.loop, None if pol == "static" else pol, rep,
                                 sched_path, cfg.duration_s, cfg.out_dir, seed=cfg.seed + rep,
                                 on_tick=lambda t, p=pol, r=rep: pr.tick(p, r, t))
                res.policy = pol
                s = score(res.requests(), res.timeline(), cfg.duration_s, cfg.slo_seconds)
                entry = checked_entry(rpt.run_entry(pol, rep, s, res.decisions), before, own,
                                      own0, cfg.exclusion, order)
                runs.append(entry)
                details["runs"].append(_details(res))
                if rep == 0:
                    series[pol] = _series(res)
                if first is None:
                    first = res
                pr.say(_line(pol, rep, s, res) + (f"; EXCLUDED: {entry['excluded']}"
                                                  if entry["excluded"] else ""))
                write()
            os.unlink(sched_path)
        if first is not None and cfg.affinity_seconds > 0:
            details["affinity"] = _affinity_experiment(c, probe, cfg, first, cap["rps"], pr)
            rpt.write_json(os.path.join(cfg.out_dir, "details.json"), details)
    report = rpt.build_report(info, cfg.slo_seconds, runs, cfg.baselines, extra)
    title = (f"DeathStarBench social network (emulated), {os.path.basename(cfg.trace_path)} "
             f"{info.segment['start']} .. {info.segment['end']}, scale {seg.scale:.4f}, "
             f"warp {seg.time_warp:g}×, SLO {cfg.slo_seconds:g} s")
    rpt.plot_timelines(os.path.join(cfg.out_dir, "timeline.png"),
                       {p: s["total"] for p, s in series.items()}, cfg.slo_seconds, title)
    rpt.plot_scores(os.path.join(cfg.out_dir, "scores.png"), report["summary"], title)
    plot_services(os.path.join(cfg.out_dir, "services.png"), series, title)
    if "affinity" in details:
        plot_affinity(os.path.join(cfg.out_dir, "affinity.png"), details["affinity"])
    return report


def starting_allocation(cfg: DsbCompareConfig) -> dict[str, float]:
    """Cores each logic service starts with: replicas x limit."""
    return {s: cfg.cluster.state(s).replicas * (cfg.cluster.state(s).cpu_limit_cores or 0.0)
            for s in LOGIC_SERVICES}


def measure_dsb_capacity(c: Cluster, cfg: DsbCompareConfig, alloc: dict[str, float],
                         say: Callable[[str], None]) -> dict:
    """Idle CPU and CPU per request of every logic service from two open-loop rates
    (capacity.measure_capacity), each measurement on the stores as every run starts from
    (reseeded: composed posts raise CPU per request); the deployment's capacity is that of the
    service that runs out first."""
    def usage() -> dict[str, float]:
        out = {}
        for s in LOGIC_SERVICES:
            st = read_cpu_stat(c.sb.mounts, c.sb.hierarchy, c.service_group(s).rel)
            out[s] = (st.usage_seconds or 0.0) if st else 0.0
        return out

    return capmod.measure_capacity(
        lambda args: start_loadgen(c, [*args, "--users", str(cfg.loop.users)],
                                   cfg.loop.request_timeout_seconds),
        usage, alloc, cfg.probe_rate_rps, cfg.probe_seconds, seed=cfg.seed + 7919,
        repeats=cfg.capacity_repeats, before_each=c.reseed, say=say)


def _line(pol: str, rep: int, s, res: DsbRun) -> str:  # noqa: ANN001
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1e3:.0f} ms"

    return (f"  {pol} #{rep + 1}: {s.requests} req, {s.failed} failed; p50 {ms(s.p50_seconds)} "
            f"p99 {ms(s.p99_seconds)}; SLO viol {s.slo_violation_ratio:.1%}; "
            f"{s.cpu_core_seconds_allocated:.0f} core-s allocated, "
            f"{s.cpu_core_seconds_used:.0f} used; {s.mean_replicas:.1f} replicas in all; "
            f"{res.decisions} decisions")


def _per_kind(res: DsbRun) -> dict:
    r = res.records
    out = {}
    if r.kind is None:
        return out
    for i, k in enumerate(KINDS):
        m = (r.kind == i) & r.ok & np.isfinite(r.latency)
        p50, p99 = percentiles(r.latency[m], (50, 99))
        out[k] = {"requests": int((r.kind == i).sum()), "ok": int(m.sum()),
                  "p50_seconds": p50, "p99_seconds": p99}
    return out


def _details(res: DsbRun) -> dict:
    t = [k.t for k in res.ticks]
    return {
        "policy": res.policy, "repeat": res.repeat, "decisions": res.decisions,
        "decide_calls": res.decide_calls, "by_request_type": _per_kind(res),
        "actuations": _jsonable(res.actuations),
        "services": {s: {"t": t, **{key: _jsonable(v[s].tolist()) for key, v in (
            ("replicas", res.service_series("replicas")),
            ("limit_cores", res.service_series("limit_cores")),
            ("used_cores", res.service_series("used_cores")),
            ("runq_p95_seconds", res.service_series("runq_p95_seconds")),
            ("throttled_ratio", res.service_series("throttled_ratio")))}}
            for s in LOGIC_SERVICES},
    }


def _series(res: DsbRun) -> dict:
    tl = res.timeline()
    r = res.records
    lat_t, p50, p99 = rpt.latency_series(r.scheduled, r.latency, r.ok)
    ts = [k for k in res.ticks if k.t >= 0]
    load = np.array([k.sent_rps for k in ts])
    t_load = np.array([k.t for k in ts])
    return {
        "total": {"t": tl.t, "load": np.interp(tl.t, t_load, load) if t_load.size else tl.t * 0,
                  "replicas": tl.replicas, "allocated": tl.allocated(),
                  "used": tl.used_cores, "lat_t": lat_t, "p50": p50, "p99": p99},
        "t": np.array([k.t for k in res.ticks]),
        "replicas": res.service_series("replicas"),
        "allocated": {s: res.service_series("replicas")[s] * res.service_series(
            "limit_cores")[s] for s in LOGIC_SERVICES},
        "used": res.service_series("used_cores"),
    }


def _affinity_experiment(c: Cluster, probe: Probe, cfg: DsbCompareConfig, res: DsbRun,
                         capacity_rps: float, pr: DsbProgress) -> dict:
    # the product's rule on the services' signal windows (CPU usage per tick), logged as the
    # scaler logs it; the pairs behind those recommendations drive the placement
    windows = list(res.windows.values())
    recs = affinity.recommendations(
        windows, {w.workload: c.actuators[w.workload.name].current() for w in windows})
    reclog.append(os.path.join(cfg.out_dir, "recommendations-affinity.jsonl"), recs)
    hints = affinity.pairs({w.workload: (w.ts, w.get("cpu_usage_cores")) for w in windows})
    load = {s: float(np.nanmean(res.service_series("used_cores")[s])) for s in LOGIC_SERVICES}
    default = place(load, NODES)
    following = place(load, NODES, hints)
    out: dict = {
        "source_run": res.policy, "pairs": [
            {"a": h.a.name, "b": h.b.name, "r": h.r, "samples": h.samples, "kind": h.kind}
            for h in hints],
        "placements": {"default": default, "affinity": following},
        "satisfied": {"default": satisfied(default, hints), "affinity": satisfied(following,
                                                                                   hints)},
        "rounds": [],
    }
    pr.say(f"affinity: {len(hints)} pairs with |r| > 0.8 ({sum(h.kind == 'spread' for h in hints)}"
           f" spread, {sum(h.kind == 'co-locate' for h in hints)} co-locate); default placement "
           f"follows {out['satisfied']['default'][0]}, affinity placement "
           f"{out['satisfied']['affinity'][0]} of {len(hints)}")
    if default == following:
        out["note"] = "the pairs do not change the default placement: nothing to measure"
        pr.say("  " + out["note"])
        return out
    rate = cfg.affinity_load_fraction * capacity_rps
    out["rate_rps"] = rate
    states = {s: CurrentState(1, cfg.affinity_cpu, cfg.affinity_cpu) for s in LOGIC_SERVICES}
    sched = traces.schedule(np.full(int(cfg.affinity_seconds), rate), 1.0, seed=cfg.seed + 99)
    tmp = tempfile.mkdtemp(prefix="runqscale-affinity-")
    sched_path = os.path.join(tmp, "s.npy")
    np.save(sched_path, sched)
    try:
        order = [("default", default), ("affinity", following)]
        for rnd in range(cfg.affinity_rounds):
            # ABBA: whichever runs first after a change of deployment pays for it (drains,
            # reloads, cold connections); alternating the order cancels that bias
            for name, plc in (order if rnd % 2 == 0 else order[::-1]):
                c.reset(states)
                c.place(plc)
                time.sleep(cfg.loop.settle_seconds)
                res_p = run_policy(c, probe, cfg.loop, None, rnd, sched_path,
                                   cfg.affinity_seconds, tmp, seed=cfg.seed + 99)
                r = res_p.records
                ok = r.ok & np.isfinite(r.latency)
                p50, p99 = percentiles(r.latency[ok], (50, 99))
                row = {"round": rnd, "placement": name, "requests": int(r.ok.size),
                       "ok": int(ok.sum()), "p50_seconds": p50, "p99_seconds": p99}
                out["rounds"].append(row)
                pr.say(f"  affinity round {rnd + 1}: {name:8s} p50 "
                       f"{(p50 or 0) * 1e3:.1f} ms p99 {(p99 or 0) * 1e3:.1f} ms "
                       f"({row['ok']}/{row['requests']} ok)")
    finally:
        c.place({})
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    p99 = {n: [r["p99_seconds"] for r in out["rounds"] if r["placement"] == n
               and r["p99_seconds"] is not None] for n in ("default", "affinity")}
    if p99["default"] and p99["affinity"]:
        d, a = float(np.mean(p99["default"])), float(np.mean(p99["affinity"]))
        out["p99_mean_seconds"] = {"default": d, "affinity": a}
        out["p99_change"] = a / d - 1.0
        pr.say(f"  following the affinity pairs changed p99 by {out['p99_change']:+.1%} "
               f"({d * 1e3:.1f} -> {a * 1e3:.1f} ms, mean of {cfg.affinity_rounds} rounds)")
    return out


def plot_services(path: str, series: dict[str, dict], title: str) -> None:
    """Per policy (columns): replicas and CPU allocated/used per service (rows), over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pols = list(series)
    fig, axes = plt.subplots(3, len(pols), figsize=(7 * len(pols), 10), sharex=True,
                             squeeze=False)
    cmap = plt.get_cmap("tab20")
    for j, pol in enumerate(pols):
        s = series[pol]
        for i, svc in enumerate(LOGIC_SERVICES):
            c = cmap(i % 20)
            label = svc.replace("-service", "")
            axes[0][j].step(s["t"], s["replicas"][svc] + 0.03 * i, where="post", color=c,
                            label=label)
            axes[1][j].step(s["t"], s["allocated"][svc], where="post", color=c, label=label)
            axes[2][j].plot(s["t"], s["used"][svc], color=c, lw=0.9, label=label)
        axes[0][j].set_title(pol)
        axes[0][j].set_ylabel("replicas (offset per service)")
        axes[1][j].set_ylabel("CPU allocated (cores)")
        axes[2][j].set_ylabel("CPU used (cores)")
        axes[2][j].set_xlabel("seconds into the run")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_affinity(path: str, aff: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = aff.get("rounds", [])
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [f"{r['placement']}\n#{r['round'] + 1}" for r in rows]
    vals = [(r["p99_seconds"] or 0) * 1e3 for r in rows]
    ax.bar(labels, vals, color=["C0" if r["placement"] == "default" else "C1" for r in rows])
    ax.set_ylabel("end-to-end p99 (ms)")
    ax.set_title(f"placement following {len(aff['pairs'])} affinity pairs vs default",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
