"""`python -m runqscale.scaler.k8s`: the in-cluster scaler (leader-elected, dry-run by default).

Prints one JSON object per line on stdout: leadership changes, each workload's outcome as soon as
it is known, and an `applying` line just before each API write (so a kill -9 between a write and
its outcome still leaves the intent in the log).
SIGTERM/SIGINT release the Lease so a standby replica takes over without waiting for expiry.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import click

from runqscale.scaler import prometheus_source, signals
from runqscale.scaler.actuators.kubernetes import KubernetesActuator
from runqscale.scaler.httpconfig import HttpClientConfig, prometheus_http_options
from runqscale.scaler.k8s.client import ApiClient, RetryPolicy
from runqscale.scaler.k8s.controller import Controller
from runqscale.scaler.k8s.events import EventRecorder
from runqscale.scaler.k8s.kubeconfig import ClusterAccess, cluster_options, one_line_errors
from runqscale.scaler.k8s.leader import LeaderElector
from runqscale.scaler.model import ScalerConfig
from runqscale.scaler.selfmetrics import ScalerMetrics


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _finite(value: float, name: str) -> float:
    # click's FloatRange lets nan and inf through its bounds
    if not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number of seconds, e.g. 30",
                                 param_hint=name)
    return value


def _listen(value: str) -> tuple[str, int]:
    """'[HOST]:PORT' -> (host, port); a one-line usage error otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not [HOST]:PORT; e.g. :9102",
                                 param_hint="--metrics-listen")
    return host.strip("[]"), int(port)


def _client(server: str | None, token_file: str | None, ca_file: str | None, insecure: bool,
            kubeconfig: str | None = None, context: str | None = None, **kw: Any) -> ApiClient:
    return ClusterAccess(kubeconfig, context, server, token_file, ca_file, insecure).client(**kw)


@click.command()
@click.option("--prometheus", "prometheus_url", help="Prometheus URL to read signals from.")
@click.option("--signals", "signals_file", type=click.Path(dir_okay=False),
              help="A signals JSON Lines file re-read every step (instead of Prometheus).")
@click.option("--dry-run/--apply", default=True, show_default=True,
              help="Dry-run sends writes with dryRun=All: validated, never persisted.")
@cluster_options
@click.option("--server", help="API server URL, direct (default: kubeconfig, in-cluster in a pod).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--insecure", is_flag=True, help="Do not verify the API server certificate.")
@click.option("--namespace", "namespaces", multiple=True,
              help="Only these namespaces (repeatable; default all).")
@click.option("--lease-namespace", default=lambda: os.environ.get("POD_NAMESPACE", "default"))
@click.option("--lease-name", default="runqscale-scaler", show_default=True)
@click.option("--identity", default=lambda: os.environ.get("POD_NAME", socket.gethostname()))
@click.option("--lease-duration", type=float, default=15.0, show_default=True)
@click.option("--renew-deadline", type=float, default=10.0, show_default=True)
@click.option("--retry-period", type=float, default=2.0, show_default=True)
@click.option("--tick", type=float, default=5.0, show_default=True,
              help="Seconds between steps (each policy still decides at its own period).")
@click.option("--window", type=float, default=300.0, show_default=True,
              help="Seconds of signals given to a policy.")
@click.option("--max-signal-age", type=float, default=60.0, show_default=True,
              help="No decision when the newest signal is older than this (seconds).")
@click.option("--min-replicas", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--max-replicas", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--target-runq-p95", type=float,
              default=ScalerConfig.target_runq_p95_seconds, show_default=True,
              help="Seconds (workloads override with runqscale.io/target-runq-p95).")
@click.option("--period", type=float, default=None,
              help="Seconds between decisions per workload (default: each policy's own period).")
@click.option("--step-budget", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              callback=lambda ctx, p, v: _finite(v, "--step-budget"),
              help="Seconds one step may spend; workloads left wait for the next step.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), default=None,
              help="Append the recommendations log (JSON Lines, design.md) to this file; "
                   "resumed after a restart.")
@click.option("--metrics-listen", default=None, metavar="[HOST]:PORT",
              help="Serve the scaler's own /metrics (runqscale_scaler_*) here, e.g. :9102.")
@click.option("-v", "--verbose", is_flag=True)
@prometheus_http_options
@one_line_errors
def main(prometheus_url: str | None, signals_file: str | None, dry_run: bool,
         server: str | None, token_file: str | None, ca_file: str | None, insecure: bool,
         namespaces: tuple[str, ...], lease_namespace: str, lease_name: str, identity: str,
         lease_duration: float, renew_deadline: float, retry_period: float, tick: float,
         window: float, max_signal_age: float, min_replicas: int, max_replicas: int,
         target_runq_p95: float, period: float | None, step_budget: float,
         log_path: str | None, metrics_listen: str | None, verbose: bool,
         kubeconfig: str | None = None, context: str | None = None,
         prometheus_http: HttpClientConfig | None = None) -> None:
    """Scale opted-in workloads (runqscale.io/policy annotation) from run-queue signals."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(prometheus_url) == bool(signals_file):
        raise click.UsageError("give exactly one of --prometheus URL or --signals FILE")
    listen = _listen(metrics_listen) if metrics_listen is not None else None
    if log_path:
        try:  # a bad --log path is bad input (exit 2), found before anything runs
            with open(log_path, "ab"):
                pass
        except OSError as exc:
            raise click.BadParameter(f"{log_path}: cannot append ({exc.strerror}); give a "
                                     "writable file path", param_hint="--log") from None
    metrics = ScalerMetrics()
    if listen is not None:
        try:
            metrics.serve(listen[1], listen[0])
        except OSError as exc:
            raise click.BadParameter(f"{metrics_listen}: cannot listen ({exc.strerror}); "
                                     "choose a free port", param_hint="--metrics-listen") from None
    if prometheus_url:
        prom = prometheus_source.PrometheusSource(prometheus_url, staleness_seconds=max_signal_age,
                                        http=prometheus_http)
        step = min(15.0, max(1.0, window / 60))

        def source(now: float):
            fetched = prom.fetch(now, window, step)
            for w in fetched.warnings:
                logging.getLogger("signals").info("%s", w)
            return fetched.samples
    else:
        def source(now: float):
            return signals.read_file(signals_file)

    defaults = ScalerConfig(min_replicas=min_replicas, max_replicas=max_replicas,
                            target_runq_p95_seconds=target_runq_p95, period_seconds=period)
    client = _client(server, token_file, ca_file, insecure, kubeconfig, context)
    # Leases get one attempt per round (the next round is the retry), with a timeout well inside
    # the renew deadline so a hung call cannot keep a leader acting past it.
    lease_client = _client(server, token_file, ca_file, insecure, kubeconfig, context,
                           retry=RetryPolicy(attempts=1),
                           timeout_seconds=max(retry_period, renew_deadline / 3))
    elector = LeaderElector(lease_client, lease_namespace, lease_name, identity,
                            lease_duration, renew_deadline, retry_period)
    ctl = Controller(
        client, source, KubernetesActuator(client, dry_run=dry_run, max_signal_age=max_signal_age),
        EventRecorder(client, instance=identity), defaults, identity, elector, namespaces,
        window, max_signal_age, step_budget_seconds=step_budget,
        on_outcome=lambda out: _emit(out.to_json()), log_path=log_path, metrics=metrics,
    )
    stop = threading.Event()

    def _term(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)

    def elect() -> None:
        was = False
        while not stop.is_set():
            elector.try_acquire_or_renew()
            now_leader = elector.is_leader()
            if now_leader != was:
                _emit({"event": "leader", "ts": time.time(), "identity": identity,
                       "leader": now_leader, "holder": elector.holder})
                was = now_leader
            stop.wait(retry_period)

    t = threading.Thread(target=elect, name="leader-election", daemon=True)
    t.start()
    _emit({"event": "start", "ts": time.time(), "identity": identity, "dry_run": dry_run})
    while not stop.is_set():
        ctl.step()  # each outcome is printed as it happens (on_outcome)
        stop.wait(tick)
    t.join(timeout=retry_period + 1)
    elector.release()
    _emit({"event": "stop", "ts": time.time(), "identity": identity})


if __name__ == "__main__":
    main()
