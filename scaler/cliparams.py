"""Click parameter types and the TOML config loader of the scaler commands: bad input fails at
the edge, as one line naming the option and the fix (exit 2)."""

from __future__ import annotations

import math
import re
import tomllib
from typing import Any, TextIO

import click

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


def load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
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
