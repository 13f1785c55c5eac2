"""The `runqscale` command line: one click group; each subcommand lives beside the part it drives.

Subcommands are loaded only when they run, so `runqscale agent` never pays (in start-up time or
memory) for the scaler's or the benchmarks' modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from runqscale import __version__, termination

# name -> (module, attribute, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "probe": ("runqscale.agent.probe_cmd", "probe", "Live per-container run-queue latency."),
    "agent": ("runqscale.cli", "agent", "Node daemon: probes + Prometheus /metrics."),
    "scaler": ("runqscale.scaler.cli", "scaler", "Scaling policies: decide from signals."),
    "validate": ("runqscale.validation.cli", "validate", "Stress-test validation on this host."),
    "status": ("runqscale.scaler.status_cmd", "status", "Opted-in workloads: now vs recommended."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click's documented lazy pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (mod, _, _) in SUBCOMMANDS.items() if importlib.util.find_spec(mod)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        return getattr(importlib.import_module(target[0]), target[1])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, SUBCOMMANDS[n][2]) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runqscale")
def main() -> None:
    """runqscale: run-queue latency per container, measured with eBPF, driving autoscaling.

    \b
    Examples:
      runqscale probe --count 3            # live per-container table, three intervals
      runqscale agent --listen :9100       # the DaemonSet process: probe + /metrics
      runqscale scaler --policy showar --signals signals.jsonl --once
      runqscale validate stress            # hog vs light service, verdict in under a minute
    """


@click.command("agent", add_help_option=False, context_settings={
    "ignore_unknown_options": True, "allow_extra_args": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent(args: tuple[str, ...]) -> None:
    """Node daemon: probes + Prometheus /metrics (`runqscale agent --help`)."""
    # Its flags are parsed by argparse (agent/options.py), one parser for this command and the
    # DaemonSet's `python -m runqscale.agent`, which never loads click.
    from runqscale.agent.daemon_cmd import main as agent_main

    agent_main(list(args))


def run_one_line(group: click.Group, prog: str) -> None:
    """Run a console entry point: every usage error of every subcommand is one line on stderr
    (`<command>: error: <what and the fix>`), exit code 2; no usage block, no traceback."""
    try:
        rv = group.main(standalone_mode=False, prog_name=prog)
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else prog
        click.echo(f"{where}: error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"{prog}: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:
        code, what = termination.stopped(e)
        click.echo(f"{prog}: {what}", err=True)
        sys.exit(code)
    sys.exit(rv if isinstance(rv, int) else 0)


def run() -> None:
    """The `runqscale` console entry point (one-line usage errors, exit 2)."""
    run_one_line(main, "runqscale")


if __name__ == "__main__":
    run()
