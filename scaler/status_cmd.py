"""`runqscale status` and the kubectl plugin `kubectl-runqscale` (`kubectl runqscale status`):
the opted-in workloads from the cluster, with the last decision from the recommendations log."""

from __future__ import annotations

import json
import sys
import time

import click
from rich.text import Text

from runqscale import tables
from runqscale.scaler import log
from runqscale.scaler.actuators.kubernetes import SCALABLE_KINDS
from runqscale.scaler.k8s.client import ApiError, path
from runqscale.scaler.k8s.kubeconfig import (
    ClusterAccess,
    cluster_options,
    one_line_errors,
)
from runqscale.scaler.model import Recommendation
from runqscale.scaler.status import reason_text, rows, table

COMPONENT = "runqscale-scaler"  # the EventRecorder's source.component


def _read_log(log_path: str | None) -> list[Recommendation]:
    if not log_path:
        return []
    try:
        return log.read(log_path).recommendations
    except log.LogError as e:
        raise click.BadParameter(f"{e}; point --log at a recommendations log",
                                 param_hint="--log") from None
    except OSError as e:
        raise click.BadParameter(f"{log_path}: cannot read ({e.strerror})",
                                 param_hint="--log") from None


@click.command("status")
@cluster_options
@click.option("--namespace", "-n", "namespaces", multiple=True,
              help="Only these namespaces (repeatable; default all).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False),
              help="The recommendations log (JSON Lines) for the last decision per workload.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {ts, workloads: [...]}.")
@one_line_errors
def status(kubeconfig: str | None, context: str | None, namespaces: tuple[str, ...],
           log_path: str | None, as_json: bool) -> None:
    """Opted-in workloads: policy, replicas and CPU now vs recommended, the signal and reason
    of the last decision, and how long ago it was.

    \b
    Examples:
      runqscale status --log recommendations.jsonl
      runqscale status --context prod -n shop --json
      kubectl runqscale status --log recommendations.jsonl
    """
    recs = _read_log(log_path)
    client = ClusterAccess(kubeconfig, context).client()
    objects = []
    try:
        for kind in SCALABLE_KINDS:
            for ns in namespaces or (None,):
                objects += [(kind, o) for o in client.get(path(kind, ns)).get("items") or []]
    except ApiError as e:
        click.echo(f"runqscale status: error: {e}", err=True)
        sys.exit(1)
    events: list[dict] = []
    try:  # the in-cluster scaler's Events: its decisions when there is no log at hand
        for ns in namespaces or (None,):
            events += client.get(path("Event", ns), fieldSelector=f"source={COMPONENT}"
                                 ).get("items") or []
    except ApiError as e:
        click.echo(f"runqscale status: note: no Events ({e.status} {e.reason})", err=True)
    now = time.time()
    rs = rows(objects, recs, events)
    if as_json:
        click.echo(json.dumps({"ts": now, "workloads": [r.to_json(now) for r in rs]},
                              allow_nan=False))
        return
    if not rs:
        click.echo("no workload opted in (annotation runqscale.io/policy)"
                   + (f" in {', '.join(namespaces)}" if namespaces else ""))
        return
    out = tables.console(width=160)  # a file or pipe: room for REASON
    wide = out.width >= 150
    out.print(table(rs, now, with_reason=wide))
    if not wide:  # a narrow terminal: each reason on its own line, wrapped
        for r in rs:
            out.print(Text(f"{r.namespace}/{r.name}: {reason_text(r)}"))


@click.group("kubectl runqscale", context_settings={"help_option_names": ["-h", "--help"]})
def kubectl_plugin() -> None:
    """runqscale as a kubectl plugin: `kubectl runqscale status`."""


kubectl_plugin.add_command(status)


def kubectl_run() -> None:
    """Console entry point `kubectl-runqscale`: usage errors are one line, exit 2."""
    from runqscale.cli import run_one_line

    run_one_line(kubectl_plugin, "kubectl runqscale")
