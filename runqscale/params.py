"""click parameter types shared by every command (agent, probe, scaler, validation): bad values
fail at the edge, naming the option."""

from __future__ import annotations

import click

from runqscale.values import duration_seconds, listen_address


class Duration(click.ParamType):
    """`500ms`, `1s`, `2.5s`, `5m`, `1h`, `100us`, or a plain number of seconds; must be > 0
    (>= 0 with `allow_zero`, for options where 0 switches a step off)."""

    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value, param, ctx) -> float:  # type: ignore[override]
        try:
            return duration_seconds(value, self.allow_zero)
        except ValueError as e:
            self.fail(str(e), param, ctx)


DURATION = Duration()
DURATION_OR_ZERO = Duration(allow_zero=True)


class ListenAddress(click.ParamType):
    """`:9100` (all interfaces), `127.0.0.1:9100`, `[::1]:9100`, `0.0.0.0:0` (any free port)."""

    name = "host:port"

    def convert(self, value, param, ctx) -> tuple[str, int]:  # type: ignore[override]
        try:
            return listen_address(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


LISTEN = ListenAddress()
