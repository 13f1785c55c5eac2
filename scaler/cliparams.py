"""Click parameter types and the TOML config loader of the scaler commands: bad input fails at
the edge, as one line naming the option and the fix (exit 2)."""

from __future__ import annotations

import math
import re
from typing import Any, TextIO

import click

from runqscale import params
from runqscale.config import ConfigError, option_defaults
from runqscale.scaler import signals
from runqscale.scaler.model import Sample, WorkloadRef


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


class OneLineCommand(_OneLineParse, click.Command):
    pass


class _OneLineType(click.ParamType):
    def fail(
        self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None
    ) -> Any:
        raise OneLineBadParameter(message, ctx=ctx, param=param)


class Duration(_OneLineType, params.Duration):
    """runqscale/params.py's duration, failing in this command's one-line style."""


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


def load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--config FILE (TOML; runqscale/config.py): keys are the long option names, in a [scaler]
    table or at the top; they become the options' defaults (flags win)."""
    if value is None:
        return None
    try:
        defaults = option_defaults(ctx.command, value, section="scaler",
                                   path_types=(click.Path, SignalsFile), kind="TOML")
    except ConfigError as exc:
        raise OneLineBadParameter(str(exc), ctx=ctx, param=param) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value
