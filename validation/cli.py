"""`runqscale validate`: the stress-test validation CLI."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.live import Live

from runqscale import tables, termination
from runqscale.agent.errors import fail
from runqscale.data import REED98
from runqscale.params import DURATION, DURATION_OR_ZERO
from runqscale.probes.backends import BACKENDS, HIERARCHIES
from runqscale.probes.errors import ProbeError
from runqscale.scaler.model import ScalerConfig
from runqscale.scaler.policies.showar_sizing import SizingParams
from runqscale.validation.summary import print_summary, summary


class _Segment(click.ParamType):
    """`START[,DURATION]` (or the older `START+LENGTH`) as offsets into the trace: `6h,2h30m`,
    `90m+30m`, `0`."""

    name = "start[,duration]"

    def convert(self, value, param, ctx):  # type: ignore[override]
        if isinstance(value, tuple):
            return value
        text = str(value)
        start, _, length = text.partition("," if "," in text else "+")
        try:
            s = 0.0 if start.strip() in ("", "0") else DURATION.convert(start, param, ctx)
            n = DURATION.convert(length, param, ctx) if length else None
        except click.BadParameter:
            self.fail(f"{value!r} is not START[,DURATION]; write e.g. 9h,2h30m or 0,1h",
                      param, ctx)
        return s, n


def _policy_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from runqscale.scaler.policies import POLICIES

    names = tuple(p.strip() for p in value.split(",") if p.strip())
    for n in names:
        if n not in POLICIES:
            raise click.BadParameter(f"unknown policy {n!r}; choose from {','.join(POLICIES)}",
                                     ctx, param)
    if not names:
        raise click.BadParameter("name at least one policy, e.g. showar,hpa", ctx, param)
    return names


@click.group("validate", invoke_without_command=True)
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="Trace to replay: `timestamp,count` CSV (WC98 per-minute or per-second) or a "
                   "whitespace list of per-second counts.")
@click.option("--policies", default="showar,hpa,vpa,phpa-linear,phpa-knn,static",
              show_default=True, callback=_policy_list, help="Comma-separated, run in order.")
@click.option("--duration", type=DURATION, default="150s", show_default=True,
              help="Real time per policy run.")
@click.option("--repeats", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="out/validate",
              show_default=True, help="report.json, details.json, PNGs, recommendation logs.")
@click.option("--segment", type=_Segment(), default=None,
              help="Part of the trace: START,DURATION offsets, e.g. 9h,2h30m (START+LENGTH "
                   "also works). Default: the busiest window --duration covers at --max-warp.")
@click.option("--time-warp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Trace seconds per real second (default: the segment fits --duration).")
@click.option("--max-warp", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Refuse segments replayed faster than this (trace s per real s).")
@click.option("--slo", type=DURATION, default="500ms", show_default=True,
              help="Response-time SLO.")
@click.option("--app", type=click.Choice(("runlang", "deathstarbench")), default="runlang",
              show_default=True,
              help="runlang: the code-execution service; deathstarbench: the emulated social "
                   "network (11 services scaled independently, the 60/30/10 mix).")
@click.option("--graph", "graph_path", type=click.Path(dir_okay=False),
              default=str(REED98), show_default="data/deathstarbench/socfb-Reed98.edges",
              help="deathstarbench: the social graph (edge list) the stores are seeded from.")
@click.option("--affinity-seconds", type=DURATION_OR_ZERO, default="30s", show_default=True,
              help="deathstarbench: seconds per placement per round of the affinity "
                   "experiment (0 skips it).")
@click.option("--affinity-rounds", type=click.IntRange(1, 20), default=2, show_default=True,
              help="deathstarbench: default/affinity placement pairs to alternate.")
@click.option("--peak", "peak_fraction", type=click.FloatRange(0.05, 5), default=1.4,
              show_default=True,
              help="The segment's p99 step rate maps to this x the starting deployment's "
                   "capacity (from CPU per request measured open loop).")
@click.option("--trough", "trough_fraction", type=click.FloatRange(0, 5), default=0.3,
              show_default=True, help="... and its p01 step rate to this x the capacity.")
@click.option("--probe-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The light open-loop req/s idle CPU and CPU per request are measured "
                   "at (runlang 3, deathstarbench 10); the second rate is half the capacity "
                   "it implies.")
@click.option("--capacity", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Skip the measurement: req/s the starting deployment serves.")
@click.option("--capacity-repeats", type=click.IntRange(1, 15), default=3, show_default=True,
              help="Measure the light/loaded pair this many times in turn and keep the "
                   "measurement with the median capacity (this machine's speed moves within "
                   "minutes). Not used with --capacity.")
@click.option("--baselines", default=",".join(("hpa", "vpa", "phpa-knn")), show_default=True,
              callback=_policy_list,
              help="Policies the others are compared against (paired ratios in report.json).")
@click.option("--max-foreign-cpu", type=click.FloatRange(0), default=0.5, show_default=True,
              help="Exclude a run when the host spent more cores than this outside the "
                   "sandbox (not counting niced processes).")
@click.option("--max-steal", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Exclude a run when the hypervisor stole more than this share of CPU time.")
@click.option("--min-replicas", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--max-replicas", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--initial-replicas", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--replica-cpu", type=click.FloatRange(0.01, 64), default=None,
              help="Initial CPU request = limit per replica (cores); static keeps it "
                   "(runlang 0.4, deathstarbench 0.1 per service).")
@click.option("--max-cpu-per-replica", type=click.FloatRange(0.01, 64), default=1.0,
              show_default=True)
@click.option("--target-runq-p95", type=DURATION, default=None,
              help="showar's run-queue p95 target (default: the library's, "
                   f"{ScalerConfig.target_runq_p95_seconds * 1e3:g} ms).")
@click.option("--target-cpu", type=click.FloatRange(0.05, 1.0), default=None,
              help="HPA-family CPU utilisation target (default: the library's, "
                   f"{ScalerConfig.target_cpu_utilization:g}).")
@click.option("--showar-margin", type=click.FloatRange(0, 10), default=None, metavar="K",
              help="showar's vertical margin: limit = demand + K sigma of one-second usage "
                   f"(default: the library's, {SizingParams.sigma_k:g}; SHOWAR's paper uses 3).")
@click.option("--showar-replica-max", type=click.FloatRange(0.05, 64), default=None,
              metavar="CORES", help="the largest replica showar sizes before it scales out "
              "instead (default: --max-cpu-per-replica, the bound every policy shares).")
@click.option("--showar-floor", type=click.FloatRange(0.001, 64), default=None,
              metavar="CORES", help="showar's smallest limit per replica (default: the "
              f"library's, {SizingParams.min_cores:g}; an experiment's knob).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--hierarchy", type=click.Choice(HIERARCHIES), default="auto", show_default=True,
              help="Cgroup hierarchy for the replicas: CPU quotas need the cpu controller "
                   "(v1 `cpu`, or cgroup2 with cpu enabled).")
@click.pass_context
def validate(ctx: click.Context, trace_path: str | None, policies: tuple[str, ...],
             duration: float, repeats: int, out: str, segment: tuple | None,
             time_warp: float | None, max_warp: float, slo: float, app: str, graph_path: str,
             affinity_seconds: float, affinity_rounds: int, peak_fraction: float,
             trough_fraction: float, probe_rate: float | None, capacity: float | None,
             capacity_repeats: int, baselines: tuple[str, ...], max_foreign_cpu: float,
             max_steal: float,
             min_replicas: int, max_replicas: int, initial_replicas: int,
             replica_cpu: float | None, max_cpu_per_replica: float,
             target_runq_p95: float | None, target_cpu: float | None,
             showar_margin: float | None, showar_replica_max: float | None,
             showar_floor: float | None, seed: int,
             backend: str,
             hierarchy: str) -> None:
    """Prove the signal and the decisions on this machine, with real processes.

    Without a subcommand: the stress-test comparison. Real runlang replicas (HTTP
    POST /api/run runs the submitted Python in a subprocess) in their own cgroups with CPU
    quotas behind a real nginx, an open-loop generator replaying the trace segment mapped
    onto 0.3..1.4 x the starting deployment's capacity (CPU per request measured open loop),
    every policy from the same start on the same requests, repeats in ABBA order; disturbed
    runs excluded by a fixed rule; paired ratios with 95 % intervals in `comparisons`.
    Writes OUT/report.json, OUT/details.json, OUT/timeline.png, OUT/scores.png.

    \b
    Examples:
      runqscale validate --trace data/worldcup98/wc_day25_per_minute.csv \\
          --policies showar,hpa,phpa-knn --duration 150s --out out/demo
      runqscale validate --trace counts.txt --policies showar,hpa --repeats 3 --duration 10m
      runqscale validate --trace wc_day25_per_minute.csv --segment 9h,2h30m --repeats 3
      runqscale validate --app deathstarbench --policies showar,hpa --duration 120s \
          --trace data/worldcup98/wc_day25_per_minute.csv --out out/dsb
      runqscale validate stress                 # hog vs light service, verdict in ~15 s
      runqscale validate stress --out out/stress --json
      runqscale validate summary out/demo/report.json   # the table of a past run
    """
    if ctx.invoked_subcommand is not None:
        return
    if trace_path is None:
        fail("--trace FILE is required (e.g. --trace "
             "data/worldcup98/wc_day25_per_minute.csv), or run a subcommand: "
             "validate stress", usage=True)
    from runqscale.validation.host import ExclusionRule
    from runqscale.validation.traces import TraceError, load_trace, window_segment

    seg_start, seg_len = segment if segment else (None, None)
    try:
        window_segment(load_trace(trace_path), duration, seg_start, seg_len, time_warp, max_warp)
    except TraceError as e:
        fail(str(e), usage=True)
    except ValueError as e:
        fail(f"--segment: {e}", usage=True)
    if trough_fraction > peak_fraction:
        fail(f"--trough {trough_fraction:g} must not be above --peak {peak_fraction:g}",
             usage=True)
    lib = ScalerConfig()
    # what every policy of the comparison shares (one start state, bounds, target, rule)
    common = dict(trace_path=trace_path, policies=policies, duration_s=duration,
                  repeats=repeats, out_dir=out, slo_seconds=slo, segment_start_s=seg_start,
                  segment_length_s=seg_len, time_warp=time_warp, max_warp=max_warp,
                  peak_fraction=peak_fraction, trough_fraction=trough_fraction,
                  capacity_rps=capacity, capacity_repeats=capacity_repeats, seed=seed,
                  baselines=baselines,
                  exclusion=ExclusionRule(max_foreign_cpu, max_steal))
    targets = dict(
        target_cpu_utilization=lib.target_cpu_utilization if target_cpu is None else target_cpu,
        target_runq_p95_seconds=lib.target_runq_p95_seconds if target_runq_p95 is None
        else target_runq_p95,
        showar_margin=SizingParams.sigma_k if showar_margin is None else showar_margin,
        showar_replica_max=showar_replica_max, showar_floor=showar_floor)
    if app == "deathstarbench":
        _validate_dsb(common, targets, graph_path, affinity_seconds, affinity_rounds,
                      probe_rate, min_replicas, max_replicas, replica_cpu,
                      max_cpu_per_replica, backend, hierarchy)
        return
    replica_cpu = 0.4 if replica_cpu is None else replica_cpu
    if not min_replicas <= initial_replicas <= max_replicas:
        fail(f"--initial-replicas {initial_replicas} must be within --min-replicas "
             f"{min_replicas} and --max-replicas {max_replicas}", usage=True)
    from runqscale.probes.backends import open_probe
    from runqscale.validation.compare import CompareConfig, Progress, run_comparison
    from runqscale.validation.loop import LoopConfig

    loop = LoopConfig(min_replicas=min_replicas, max_replicas=max_replicas,
                      initial_replicas=initial_replicas, replica_cpu=replica_cpu,
                      max_cpu_per_replica=max(max_cpu_per_replica, replica_cpu), **targets)
    cfg = CompareConfig(**common, probe_rate_rps=probe_rate or 3.0, loop=loop)
    # from here on it owns processes and cgroups: SIGTERM cleans up as Ctrl-C does
    termination.terminate_as_interrupt()
    try:
        probe, mounts, _ = open_probe(backend, hierarchy, bpf_stats=False)
    except ProbeError as e:
        fail(str(e))
    say, tick = _progress(duration * len(policies) * repeats, duration, lambda pol, rep, t: (
        f"{pol} #{rep + 1} t={t.t:5.0f}s replicas={t.replicas} "
        f"limit={t.limit_cores:.2f} load={t.sent_rps:5.1f}/s"))

    _run_and_summarise(lambda: run_comparison(probe, mounts, cfg, Progress(say, tick)), probe,
                       f"wrote {out}/report.json, details.json, timeline.png, scores.png")


def _run_and_summarise(run: Callable[[], dict], probe: Any, wrote: str) -> None:
    """Run a comparison (runtime failures: one line, exit 1), close the probe, print the table."""
    try:
        report = run()
    except (RuntimeError, OSError) as e:
        fail(str(e))
    finally:
        probe.close()
    click.echo("")
    for e in report.get("exclusions", []):
        click.echo(f"excluded: {e['policy']} #{e['repeat'] + 1}: {e['reason']}")
    print_summary(report)
    click.echo(wrote)


def _progress(total_s: float, duration: float, label: Callable[[str, int, Any], str]
              ) -> tuple[Callable[[str], None], Callable[[str, int, Any], None]]:
    """(say, tick) for a comparison: a bar over every run's seconds, labelled by the tick."""
    done = {"n": 0}
    bar = click.progressbar(length=int(round(total_s)), label="validate", show_pos=True,
                            file=sys.stderr, width=30)

    def say(msg: str) -> None:
        click.echo(("\n" if done["n"] else "") + msg)

    def tick(pol: str, rep: int, t: Any) -> None:
        key = (pol, rep)
        last = done.setdefault(key, 0)  # type: ignore[arg-type]
        now = int(min(max(t.t, 0), duration))
        if now > last:
            bar.update(now - last)
            done[key] = now  # type: ignore[index]
            done["n"] += now - last
        bar.label = label(pol, rep, t)
        bar.render_progress()

    return say, tick


def _validate_dsb(common: dict, targets: dict, graph_path: str, affinity_seconds: float,
                  affinity_rounds: int, probe_rate: float | None, min_replicas: int,
                  max_replicas: int, replica_cpu: float | None, max_cpu_per_replica: float,
                  backend: str, hierarchy: str) -> None:
    from runqscale.deathstarbench.emulation.cluster import ClusterConfig, need_binaries
    from runqscale.deathstarbench.emulation.socialgraph import SocialGraphError, load_edges
    from runqscale.probes.backends import open_probe
    from runqscale.validation.dsb_compare import DsbCompareConfig, DsbProgress, run_dsb_comparison
    from runqscale.validation.dsb_loop import DsbLoopConfig

    try:
        load_edges(graph_path)
    except (SocialGraphError, OSError) as e:
        fail(f"--graph: {e}", usage=True)
    missing = need_binaries()
    if missing:
        fail(missing)
    cpu = 0.1 if replica_cpu is None else replica_cpu
    cfg = DsbCompareConfig(
        **common, graph_path=graph_path, probe_rate_rps=probe_rate or 10.0,
        affinity_seconds=affinity_seconds, affinity_rounds=affinity_rounds,
        loop=DsbLoopConfig(min_replicas=min_replicas, max_replicas=max_replicas,
                           max_cpu_per_replica=max(max_cpu_per_replica, cpu), **targets),
        cluster=ClusterConfig(cpu=cpu))
    # from here on it owns processes and cgroups: SIGTERM cleans up as Ctrl-C does
    termination.terminate_as_interrupt()
    try:
        probe, mounts, _ = open_probe(backend, hierarchy, bpf_stats=False)
    except ProbeError as e:
        fail(str(e))
    def label(pol: str, rep: int, t) -> str:  # noqa: ANN001 - a DsbTick
        reps = sum(s.replicas for s in t.services.values())
        hot = max(t.services.items(), key=lambda kv: kv[1].runq_p95_seconds or 0.0)
        return (f"{pol} #{rep + 1} t={t.t:4.0f}s load={t.sent_rps:5.1f}/s replicas={reps} "
                f"hottest={hot[0].replace('-service', '')} "
                f"{(hot[1].runq_p95_seconds or 0) * 1e3:.1f}ms")

    say, tick = _progress(cfg.duration_s * len(cfg.policies) * cfg.repeats, cfg.duration_s,
                          label)

    _run_and_summarise(lambda: run_dsb_comparison(probe, mounts, cfg, DsbProgress(say, tick)),
                       probe, f"wrote {cfg.out_dir}/report.json, details.json, timeline.png, "
                       "services.png, scores.png, affinity.png, recommendations-*.jsonl")


@validate.command("stress")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--hierarchy", type=click.Choice(HIERARCHIES), default="auto", show_default=True)
@click.option("--quota", type=click.FloatRange(0.01, 64), default=0.5, show_default=True,
              help="The hog's CPU quota in cores.")
@click.option("--duration", type=DURATION, default="10s", show_default=True,
              help="How long the hog runs (after a 3 s baseline).")
@click.option("--interval", type=DURATION, default="0.5s", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write stress.json and stress.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON at the end.")
def stress(backend: str, hierarchy: str, quota: float, duration: float, interval: float,
           out: str | None, as_json: bool) -> None:
    """A quota-limited CPU hog beside a light service: p95 over time and a verdict."""
    from runqscale.probes.backends import open_probe
    from runqscale.validation.stress import StressConfig, StressRow, plot, run_stress

    cfg = StressConfig(quota_cores=quota, hog_s=duration, interval_s=interval)
    # from here on it owns processes and cgroups: SIGTERM cleans up as Ctrl-C does
    termination.terminate_as_interrupt()
    try:
        probe, mounts, _ = open_probe(backend, hierarchy, bpf_stats=False)
    except ProbeError as e:
        fail(str(e))

    def ms(v: float | None) -> str:
        return f"{v * 1e3:.3f}" if v is not None else "-"

    table = tables.new(["t (s)", "light p95 ms", "hog p95 ms", "hog throttled"],
                       numeric=["t (s)", "light p95 ms", "hog p95 ms", "hog throttled"])

    def show(r: StressRow) -> None:
        thr = f"{r.hog_throttled * 100:.0f}%" if r.hog_throttled is not None else "-"
        tables.add_row(table, f"{r.t:.1f}", ms(r.light_p95), ms(r.hog_p95), thr)

    # live on a terminal; piped, the finished table once
    people = tables.console()
    try:
        if people.is_terminal:
            with Live(table, console=people, refresh_per_second=4):
                res = run_stress(probe, mounts, cfg, on_row=show)
        else:
            res = run_stress(probe, mounts, cfg, on_row=show)
            people.print(table)
    finally:
        probe.close()
    click.echo(res.verdict)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "stress.json"), "w") as f:
            json.dump(res.to_json(), f, indent=2)
        plot(res, os.path.join(out, "stress.png"))
        click.echo(f"wrote {out}/stress.json and {out}/stress.png")
    if as_json:
        click.echo(json.dumps(res.to_json()))
    sys.exit(0 if res.passed else 1)


validate.add_command(summary)
