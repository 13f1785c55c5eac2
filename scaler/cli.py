"""`runqscale scaler`: decide from signals (a recorded file or Prometheus), log, and report.

This command only decides: recommendations are printed and appended to the recommendations log;
nothing is changed. Acting on a cluster is `runqscale scaler k8s` (the in-cluster loop with
leader election and the Kubernetes actuators, dry-run unless --apply).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click

from runqscale.scaler import affinity, log, promql, signals, spread
from runqscale.scaler.clock import WallClockGuard
from runqscale.scaler.httpconfig import HttpClientConfig, prometheus_http_options
from runqscale.scaler.model import (
    CurrentState,
    Recommendation,
    Sample,
    ScalerConfig,
    SignalWindow,
    WorkloadRef,
)
from runqscale.scaler.policies import POLICIES, get


class OneLineUsageError(click.UsageError):
    """A usage error printed as one line (no usage block): 'Error: <what>; <fix>'."""

    def show(self, file: TextIO | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


class OneLineBadParameter(click.BadParameter):
    def show(self, file: TextIO | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


class _OneLineParse:
    """Turns click's usage errors during parsing into one-line ones."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except (OneLineUsageError, OneLineBadParameter):
            raise
        except click.UsageError as exc:
            raise OneLineUsageError(exc.format_message(), ctx) from None


class OneLineGroup(_OneLineParse, click.Group):
    """Every usage error of this command and its subcommands is printed as one line."""


class _OneLineCommand(_OneLineParse, click.Command):
    pass


class _OneLineType(click.ParamType):
    def fail(
        self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None
    ) -> Any:
        raise OneLineBadParameter(message, ctx=ctx, param=param)


_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


class Duration(_OneLineType):
    """'5ms', '300s', '1m', '1.5h' or plain seconds ('0.005')."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*", str(value))
            if not m or (m.group(2) and m.group(2) not in _UNITS):
                self.fail(f"{value!r} is not a duration; write e.g. 5ms, 300s, 1m", param, ctx)
            seconds = float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1.0)
        if not math.isfinite(seconds) or seconds <= 0 or seconds > 1e9:
            self.fail(f"{value!r} must be a positive duration up to 1e9 s, e.g. 5ms", param, ctx)
        return seconds


class SignalsFile(_OneLineType):
    """A signals JSON Lines file, parsed and validated (the error names the line and field)."""

    name = "signals.jsonl"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[Sample]:
        if isinstance(value, list) and all(isinstance(s, Sample) for s in value):
            return value
        if not isinstance(value, str):
            self.fail(f"{value!r} is not a file path; give the signals file's path", param, ctx)
        try:
            return signals.read_file(value)
        except FileNotFoundError:
            self.fail(f"{value}: no such file; record signals first or fix the path", param, ctx)
        except OSError as exc:
            self.fail(f"{value}: cannot read ({exc.strerror})", param, ctx)
        except UnicodeDecodeError:
            self.fail(f"{value}: not UTF-8 text; the signals file is JSON Lines", param, ctx)
        except signals.SignalsError as exc:
            self.fail(str(exc), param, ctx)


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange lets nan and inf through its bounds; these are bad input here."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            raise OneLineBadParameter(f"{value!r} is not a finite number", ctx=ctx, param=param)
        return rv


class PrometheusURL(_OneLineType):
    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", str(value)):
            self.fail(f"{value!r} is not an http(s) URL; e.g. http://prometheus:9090", param, ctx)
        return str(value)


class WorkloadType(_OneLineType):
    name = "namespace/name"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> WorkloadRef:
        if isinstance(value, WorkloadRef):
            return value
        try:
            return WorkloadRef.parse(str(value))
        except ValueError as exc:
            self.fail(f"{exc}; e.g. default/web", param, ctx)


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--config FILE (TOML): keys are the long option names with '-' or '_' (flags' defaults)."""
    if value is None:
        return None
    try:
        with open(value, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise OneLineBadParameter(f"{value}: no such file", ctx=ctx, param=param) from None
    except tomllib.TOMLDecodeError as exc:
        raise OneLineBadParameter(f"{value}: not TOML ({exc})", ctx=ctx, param=param) from None
    section = data.get("scaler", data)
    known = {
        opt.lstrip("-").replace("-", "_"): p.name
        for p in ctx.command.params
        if p.name and p.name != "config"
        for opt in p.opts
        if opt.startswith("--")
    }
    if not isinstance(section, dict):
        raise OneLineBadParameter(
            f"{value}: [scaler] must be a table of option names", ctx=ctx, param=param
        )
    params = {p.name: p for p in ctx.command.params if p.name}
    defaults = {}
    for k, v in section.items():
        key = known.get(k.replace("-", "_"))
        if key is None:
            raise OneLineBadParameter(
                f"{value}: unknown key {k!r}; use option names such as 'policy' or 'max-replicas'",
                ctx=ctx,
                param=param,
            )
        defaults[key] = _config_value(value, k, v, params[key], ctx, param)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _config_value(
    path: str, key: str, v: Any, opt: click.Parameter, ctx: click.Context, param: click.Parameter
) -> Any:
    """A config value of the right shape for its option (click would turn an int path into a
    file descriptor, and a table into its keys)."""
    scalar = (str, int, float, bool)
    if getattr(opt, "multiple", False):
        v = [v] if isinstance(v, scalar) else v
        if isinstance(v, list) and all(isinstance(x, scalar) for x in v):
            return v
        problem = "must be a value or a list of values"
    elif isinstance(opt.type, click.Path | SignalsFile) and not isinstance(v, str):
        problem = "must be a string (a file path)"
    elif isinstance(opt.type, click.types.BoolParamType) and not isinstance(v, bool):
        problem = "must be true or false"
    elif isinstance(v, scalar):
        return v
    else:
        problem = "must be a single value, not a table or list"
    raise OneLineBadParameter(f"{path}: key {key!r} {problem}", ctx=ctx, param=param)


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


class Runner:
    """Calls one policy per workload at the policy's period, carrying state; pure data moving."""

    def __init__(self, policy: str, config: ScalerConfig, period: float, window: float) -> None:
        self.policy = get(policy)
        self.config = config
        self.period = period
        self.window = window
        self.state: dict[WorkloadRef, Any] = {}
        self.last: dict[WorkloadRef, float] = {}
        self.last_affinity: float | None = None

    def due(self, wl: WorkloadRef, now: float) -> bool:
        last = self.last.get(wl)
        return last is None or now - last >= self.period - 1e-9

    def decide(self, window: SignalWindow) -> Recommendation:
        wl = window.workload
        rec, st = self.policy.decide(
            window, CurrentState.from_window(window), self.config, self.state.get(wl)
        )
        self.state[wl] = st
        self.last[wl] = window.now
        return rec

    def extras(
        self, windows: Sequence[SignalWindow], now: float, force: bool
    ) -> list[Recommendation]:
        """SHOWAR's affinity and node-pressure recommendations, every 5 minutes (or forced)."""
        if self.policy.name != "showar" or not windows:
            return []
        if not force and self.last_affinity is not None and now - self.last_affinity < 300:
            return []
        self.last_affinity = now
        current = {w.workload: CurrentState.from_window(w) for w in windows}
        out = affinity.recommendations(windows, current)
        pods = [(w.workload, p) for w in windows for p in w.pods]
        out += spread.recommendations(pods, current, now, self.config.target_runq_p95_seconds)
        return out


ResumeKey = tuple[str, bool]  # (workload key, affinity/spread extra rather than a decision)


def _resume_key(rec: Recommendation) -> ResumeKey:
    return rec.workload.key, rec.action == "affinity"


def resume_marks(log_path: str, policy: str) -> dict[ResumeKey, float]:
    """The newest logged ts per workload (decisions and extras apart) of `policy`: what a killed
    run already logged. A torn last line is not a decision, so it is decided again."""
    if not Path(log_path).exists():
        return {}
    try:
        recs = log.read(log_path).recommendations
    except log.LogError as exc:
        raise OneLineUsageError(f"--log {exc}; or give a new --log file") from None
    except OSError as exc:
        raise OneLineUsageError(f"--log {log_path}: cannot read ({exc.strerror})") from None
    marks: dict[ResumeKey, float] = {}
    for r in recs:
        if r.policy == policy:
            k = _resume_key(r)
            marks[k] = max(r.ts, marks.get(k, r.ts))
    return marks


def _unlogged(
    recs: Sequence[Recommendation], marks: dict[ResumeKey, float]
) -> list[Recommendation]:
    return [r for r in recs if r.ts > marks.get(_resume_key(r), -math.inf)]


def _emit(
    recs: Sequence[Recommendation], dry_run: bool, log_path: str | None, as_json: bool,
    marks: dict[ResumeKey, float] | None = None,
) -> None:
    from dataclasses import replace

    if marks:  # resuming: the run replays silently up to what the log already holds
        recs = _unlogged(recs, marks)
    recs = [replace(r, dry_run=dry_run, applied=False) for r in recs]
    for r in recs:
        _print(r, as_json, sys.stdout)
    if log_path:
        try:
            log.append(log_path, recs)
        except OSError as exc:
            raise click.ClickException(
                f"--log {log_path}: cannot append ({exc.strerror})") from None


def _run_file(
    samples: list[Sample], runner: Runner, once: bool, log_path: str | None, as_json: bool,
    marks: dict[ResumeKey, float] | None = None,
) -> int:
    full = signals.windows_from_samples(samples)
    if once:
        windows = []
        for w in full.values():
            win = signals.window_at(w, w.now, runner.window)
            assert win is not None
            windows.append(win)
        recs = [runner.decide(w) for w in windows]
        now = max(w.now for w in windows)
        recs += runner.extras(windows, now, force=True)
        _emit(recs, True, log_path, as_json, marks)
        return len(recs)
    all_ts = sorted({float(t) for w in full.values() for t in w.ts})
    n = 0
    for t in all_ts:
        recs = []
        current_windows = []
        for w in full.values():
            win = signals.window_at(w, t, runner.window)
            if win is None or win.now != t:
                continue
            current_windows.append(win)
            if runner.due(w.workload, t):
                recs.append(runner.decide(win))
        recs += runner.extras(current_windows, t, force=False)
        _emit(recs, True, log_path, as_json, marks)
        n += len(recs)
    return n


@dataclass
class PrometheusLoop:
    """`scaler --prometheus`: one decision round per period. Prometheus unreachable or a
    workload's newest sample older than `max_signal_age` -> a one-line warning and no decision,
    never an exit (except with --once); wall-clock jumps go through WallClockGuard."""

    source: signals.PrometheusSource
    runner: Runner
    workloads: Sequence[WorkloadRef]
    max_signal_age: float
    guard: WallClockGuard = field(default_factory=WallClockGuard)

    def round(self, now: float, mono: float) -> list[Recommendation]:
        """Decide once at wall time `now`; PrometheusError when Prometheus cannot answer."""
        note = self.guard.observe(now, mono)
        if note:
            _warn(note)
        step = max(1.0, min(self.runner.period, 15.0))
        fetched = self.source.fetch(now, self.runner.window, step)
        ages = self.source.signal_ages(now)
        for w in fetched.warnings[:20]:
            _warn(w)
        wins = [
            w for w in signals.windows_from_samples(fetched.samples).values()
            if not self.workloads or w.workload in self.workloads
        ]
        if not wins:
            _warn(f"no workload signals in {self.source.url} over the last "
                  f"{self.runner.window:g} s: no decision")
        fresh, raw_now = [], {}
        for w in wins:
            age = ages.get(w.workload)
            pw = self.guard.policy_window(w)
            if age is not None and age > self.max_signal_age:
                _warn(f"{w.workload.key}: newest run-queue sample {age:.0f} s old "
                      f"(--max-signal-age {self.max_signal_age:g} s): no decision")
            elif pw is None:
                _warn(f"{w.workload.key}: only samples from before the clock jump: no decision")
            else:
                fresh.append(pw)
                raw_now[w.workload] = w.now
        recs = [self.runner.decide(w) for w in fresh]
        recs += self.runner.extras(fresh, max((w.now for w in fresh), default=now), force=False)
        return [self.guard.wall_rec(r, raw_now.get(r.workload, now)) for r in recs]


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _run_prometheus(
    loop: PrometheusLoop,
    once: bool,
    iterations: int | None,
    log_path: str | None,
    as_json: bool,
) -> int:
    done = 0
    total = 0
    while True:
        started = time.monotonic()
        try:
            recs = loop.round(time.time(), started)
        except signals.PrometheusError as exc:
            if once:
                raise click.ClickException(str(exc)) from None
            _warn(f"{exc}: no decision this round; retrying in {loop.runner.period:g} s")
            recs = []
        _emit(recs, True, log_path, as_json)
        total += len(recs)
        done += 1
        if once or (iterations is not None and done >= iterations):
            return total
        # monotonic: a wall-clock step must not stretch or skip the sleep
        time.sleep(max(0.0, loop.runner.period - (time.monotonic() - started)))


@click.group(
    cls=OneLineGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=_load_config,
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
    default="5ms",
    show_default=True,
    help="SHOWAR's run-queue p95 target (provisional default).",
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
    runner = Runner(policy, config, period or pol.period_seconds, window)
    if signals_file is not None:
        samples = signals_file
        if workloads:
            samples = [s for s in samples if s.workload in workloads]
            if not samples:
                names = ", ".join(w.key for w in workloads)
                raise OneLineUsageError(f"--workload {names}: no such workload in --signals")
        marks = resume_marks(log_path, policy) if log_path and resume else {}
        _run_file(samples, runner, once, log_path, as_json, marks)
    else:
        assert prometheus_url is not None
        queries = promql.queries(f"{max(1, round(rate_window))}s")
        source = signals.PrometheusSource(prometheus_url, queries=queries, http=prometheus_http)
        loop = PrometheusLoop(source, runner, workloads, max_signal_age)
        _run_prometheus(loop, once, iterations, log_path, as_json)


@scaler.command("report", cls=_OneLineCommand)
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
