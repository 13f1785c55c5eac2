"""`runqscale scaler`: decide from signals (a recorded file or Prometheus), log, and report.

This command only decides: recommendations are printed and appended to the recommendations log;
nothing is changed. Acting on a cluster is `runqscale scaler k8s` (the in-cluster loop with
leader election and the Kubernetes actuators, dry-run unless --apply).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import click

from runqscale.scaler import log, prometheus_source, promql
from runqscale.scaler.cliparams import (
    Duration,
    FiniteFloatRange,
    OneLineCommand,
    OneLineGroup,
    OneLineUsageError,
    PrometheusURL,
    SignalsFile,
    WorkloadType,
    load_config,
)
from runqscale.scaler.httpconfig import HttpClientConfig, prometheus_http_options
from runqscale.scaler.loops import PrometheusLoop, replay_file
from runqscale.scaler.model import Recommendation, Sample, ScalerConfig, WorkloadRef
from runqscale.scaler.policies import POLICIES, get
from runqscale.scaler.routine import DecisionRoutine, ResumeError


def _print(rec: Recommendation, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(rec.to_json(), separators=(",", ":")) + "\n")
        return
    c, r = rec.current, rec.recommended
    out.write(
        f"{rec.ts:.0f} {rec.workload.key} {rec.policy} {rec.action}: "
        f"{c.replicas}x{_cores(c.cpu_request_cores)}/{_cores(c.cpu_limit_cores)} -> "
        f"{r.replicas}x{_cores(r.cpu_request_cores)}/{_cores(r.cpu_limit_cores)} | {rec.reason}\n"
    )


def _cores(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group(
    cls=OneLineGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=load_config,
    is_eager=True,
    expose_value=False,
    help="TOML file whose keys are these options' long names.",
)
@click.option("--policy", type=click.Choice(list(POLICIES)), default="showar", show_default=True)
@click.option(
    "--dry-run/--apply",
    default=True,
    show_default=True,
    help="Dry-run writes recommendations only (to act: `runqscale scaler k8s --apply`).",
)
@click.option(
    "--signals",
    "signals_file",
    type=SignalsFile(),
    default=None,
    help="Recorded signals, JSON Lines (design.md contract).",
)
@click.option(
    "--prometheus",
    "prometheus_url",
    type=PrometheusURL(),
    default=None,
    help="Read signals from this Prometheus server.",
)
@click.option("--once", is_flag=True, help="Decide once on the last sample and exit.")
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=None,
    help="With --prometheus: stop after this many decision rounds.",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append the recommendations log (JSON Lines) to this file.",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="With --signals and --log: skip decisions the log already holds (after a crash).",
)
@click.option("--json", "as_json", is_flag=True, help="Print recommendations as JSON Lines.")
@click.option(
    "--workload",
    "workloads",
    type=WorkloadType(),
    multiple=True,
    help="Only these workloads (namespace/name); repeatable.",
)
@click.option("--min-replicas", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--max-replicas", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--target-runq-p95",
    type=Duration(),
    default=ScalerConfig.target_runq_p95_seconds,
    show_default=True,
    help="SHOWAR's run-queue target, seconds (the library's default; showar v2 compares it "
    "with the contention wait per request when the signals carry it, else with the p95).",
)
@click.option(
    "--target-cpu",
    type=FiniteFloatRange(min=0.01, max=10.0),
    default=0.75,
    show_default=True,
    help="HPA/PHPA target CPU utilisation (fraction of request).",
)
@click.option(
    "--max-cpu-per-replica",
    type=FiniteFloatRange(min=0.001),
    default=4.0,
    show_default=True,
    help="Cores; past it SHOWAR scales out instead of up.",
)
@click.option(
    "--min-cpu-per-replica",
    type=FiniteFloatRange(min=0.0),
    default=None,
    help="Cores; default: the policy's own floor (SHOWAR 0.128, VPA 0.025).",
)
@click.option(
    "--period",
    type=Duration(),
    default=None,
    help="Decision period; default: the policy's (showar 3s, hpa 15s, vpa 60s).",
)
@click.option(
    "--window",
    type=Duration(),
    default="5m",
    show_default=True,
    help="Signal window given to each decision.",
)
@click.option(
    "--rate-window",
    type=Duration(),
    default="1m",
    show_default=True,
    help="With --prometheus: rate() window for counters (at least 4 scrape intervals).",
)
@click.option(
    "--max-signal-age",
    type=Duration(),
    default="60s",
    show_default=True,
    help="With --prometheus: no decision for a workload whose newest sample is older.",
)
@prometheus_http_options
@click.pass_context
def scaler(
    ctx: click.Context,
    policy: str,
    dry_run: bool,
    signals_file: list[Sample] | None,
    prometheus_url: str | None,
    once: bool,
    iterations: int | None,
    log_path: str | None,
    resume: bool,
    as_json: bool,
    workloads: tuple[WorkloadRef, ...],
    min_replicas: int,
    max_replicas: int,
    target_runq_p95: float,
    target_cpu: float,
    max_cpu_per_replica: float,
    min_cpu_per_replica: float | None,
    period: float | None,
    window: float,
    rate_window: float,
    max_signal_age: float,
    prometheus_http: HttpClientConfig | None = None,
) -> None:
    """Decide replicas and CPU sizes from signals with one policy (dry-run).

    \b
    Examples:
      runqscale scaler --policy showar --signals signals.jsonl --once
      runqscale scaler --policy hpa --signals signals.jsonl --log recs.jsonl
      runqscale scaler --policy showar --prometheus http://localhost:9090 --log recs.jsonl
      runqscale scaler --prometheus https://prom:9090 --prometheus-ca-file ca.pem \\
          --prometheus-bearer-token-file token --once
      runqscale scaler report recs.jsonl --png recs.png
    """
    if ctx.invoked_subcommand is not None:
        return
    if not dry_run:
        raise OneLineUsageError("--apply acts on a cluster through `runqscale scaler k8s --apply`; "
                                "this command only decides (use --dry-run)")
    if (signals_file is None) == (prometheus_url is None):
        raise OneLineUsageError(
            "give exactly one signal source: --signals FILE or --prometheus URL"
        )
    if min_replicas > max_replicas:
        raise OneLineUsageError(
            f"--min-replicas {min_replicas} is above --max-replicas {max_replicas}; swap them"
        )
    if min_cpu_per_replica is not None and min_cpu_per_replica > max_cpu_per_replica:
        raise OneLineUsageError(
            "--min-cpu-per-replica is above --max-cpu-per-replica; lower the minimum"
        )
    config = ScalerConfig(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        min_cpu_per_replica=min_cpu_per_replica,
        max_cpu_per_replica=max_cpu_per_replica,
        target_cpu_utilization=target_cpu,
        target_runq_p95_seconds=target_runq_p95,
    )
    if log_path:
        try:  # a bad --log path is bad input (exit 2), found before any decision is made
            with open(log_path, "ab"):
                pass
        except OSError as exc:
            raise OneLineUsageError(
                f"--log {log_path}: cannot append ({exc.strerror}); give a writable file path"
            ) from None
    pol = get(policy)
    if period is not None:
        config = replace(config, period_seconds=period)

    def printed(recs: Sequence[Recommendation]) -> None:
        for r in recs:
            _print(r, as_json, sys.stdout)

    try:
        routine = DecisionRoutine(log_path=log_path, resume=bool(log_path and resume),
                                  on_logged=printed)
    except ResumeError as exc:
        raise OneLineUsageError(str(exc)) from None
    try:
        if signals_file is not None:
            samples = signals_file
            if workloads:
                samples = [s for s in samples if s.workload in workloads]
                if not samples:
                    names = ", ".join(w.key for w in workloads)
                    raise OneLineUsageError(f"--workload {names}: no such workload in --signals")
            replay_file(samples, routine, pol, config, window, once)
        else:
            assert prometheus_url is not None
            queries = promql.queries(f"{max(1, round(rate_window))}s")
            source = prometheus_source.PrometheusSource(prometheus_url, queries=queries,
                                              pod_queries=promql.pods(
                                                  f"{max(1, round(rate_window))}s"),
                                              http=prometheus_http)
            loop = PrometheusLoop(source, routine, pol, config, workloads, max_signal_age,
                                  window, warn=_warn)
            loop.run(once, iterations, on_error=lambda exc: _warn(
                f"{exc}: no decision this round; retrying in {loop.period:g} s"))
    except prometheus_source.PrometheusError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"--log {log_path}: cannot append ({exc.strerror})") from None


@scaler.command("report", cls=OneLineCommand)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--png",
    "png_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Timeline plot (default: FILE with .png).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def report_cmd(file: str, png_path: str | None, as_json: bool) -> None:
    """Per-workload table and PNG timeline of a recommendations log."""
    from runqscale.scaler import report

    try:
        result = log.read(file)
    except log.LogError as exc:
        raise OneLineUsageError(str(exc)) from None
    if not result.recommendations:
        raise OneLineUsageError(f"{file}: no recommendations; run the scaler with --log first")
    summary = report.summarize(result.recommendations)
    png = Path(png_path) if png_path else Path(file).with_suffix(".png")
    try:
        report.plot(result.recommendations, png)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"workloads": summary, "png": str(png)}, indent=2))
    else:
        click.echo(report.table(summary))
        click.echo(f"timeline: {png}")
    if result.torn_last_line:
        click.echo(f"note: {file}: torn last line skipped", err=True)


def _add_k8s_loop() -> None:
    from runqscale.scaler.k8s.__main__ import main as k8s_loop

    scaler.add_command(k8s_loop, "k8s")


_add_k8s_loop()
