"""click parameter types shared by the commands: bad values fail at the edge, naming the option."""

from __future__ import annotations

import math
import re

import click

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
MAX_SECONDS = 1e9  # ~31 years: beyond it time.sleep() overflows (and nothing means it)


class Duration(click.ParamType):
    """`500ms`, `1s`, `2.5s`, `5m`, or a plain number of seconds; must be > 0."""

    name = "duration"

    def convert(self, value, param, ctx) -> float:  # type: ignore[override]
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|)\s*", str(value))
            if not m:
                self.fail(f"{value!r} is not a duration; write e.g. 500ms, 1s, 2.5s or 5m",
                          param, ctx)
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if not math.isfinite(seconds) or seconds > MAX_SECONDS:
            self.fail(f"{value!r} must be a finite duration of at most {MAX_SECONDS:g}s",
                      param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} must be greater than zero", param, ctx)
        return seconds


DURATION = Duration()


class ListenAddress(click.ParamType):
    """`:9100` (all interfaces), `127.0.0.1:9100`, `[::1]:9100`, `0.0.0.0:0` (any free port)."""

    name = "host:port"

    def convert(self, value, param, ctx) -> tuple[str, int]:  # type: ignore[override]
        if isinstance(value, tuple):
            return value
        m = re.fullmatch(r"\s*(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):([0-9]{1,5})\s*", str(value))
        if not m or int(m.group(3)) > 65535:
            self.fail(f"{value!r} is not host:port; write e.g. :9100 or 127.0.0.1:9100",
                      param, ctx)
        host = m.group(1) or m.group(2) or "0.0.0.0"
        return host, int(m.group(3))


LISTEN = ListenAddress()
