"""`runqscale validate`: the stress-test validation CLI."""

from __future__ import annotations

import json
import os
import sys

import click

from runqscale.agent.errors import fail
from runqscale.agent.params import DURATION
from runqscale.probes.backends import BACKENDS, HIERARCHIES
from runqscale.probes.errors import ProbeError


@click.group("validate")
def validate() -> None:
    """Prove the signal and the decisions on this machine, with real processes.

    \b
    Examples:
      runqscale validate stress                 # hog vs light service, verdict in ~15 s
      runqscale validate stress --out out/stress --json
    """


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
    try:
        probe, mounts, _ = open_probe(backend, hierarchy, bpf_stats=False)
    except ProbeError as e:
        fail(str(e))

    def ms(v: float | None) -> str:
        return f"{v * 1e3:9.3f}" if v is not None else "        -"

    click.echo(f"{'t (s)':>7} {'light p95 ms':>13} {'hog p95 ms':>11} {'hog throttled':>14}")

    def show(r: StressRow) -> None:
        thr = f"{r.hog_throttled * 100:13.0f}%" if r.hog_throttled is not None else " " * 13 + "-"
        click.echo(f"{r.t:7.1f} {ms(r.light_p95):>13} {ms(r.hog_p95):>11} {thr}")

    try:
        res = run_stress(probe, mounts, cfg, on_row=show)
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
