"""click parameter types shared by every command (agent, probe, scaler, validation): bad values
fail at the edge, naming the option."""

from __future__ import annotations

import math
import re
from collections.abc import Collection

import click

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0,
          "h": 3600.0, "": 1.0}
MAX_SECONDS = 1e9  # ~31 years: beyond it time.sleep() overflows (and nothing means it)


_PART = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)"


def parse_duration(value: object, units: Collection[str] = tuple(_UNITS)) -> float | None:
    """Seconds in `value` ('5ms', '2.5s', '1e-3', '5m', '2h30m', 7), or None if it is not a
    duration with one of `units` ("" = plain seconds; a compound needs a unit on every part).
    Not checked: sign, size, finiteness."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if "" in units else None
    text = str(value)
    if not re.fullmatch(rf"(?:\s*{_PART})+\s*", text):
        return None
    parts = re.findall(_PART, text)
    if len(parts) > 1 and any(not unit for _, unit in parts):
        return None  # "1 30" is not a duration
    if any(unit not in _UNITS or unit not in units for _, unit in parts):
        return None
    return sum(float(n) * _UNITS[unit] for n, unit in parts)


class Duration(click.ParamType):
    """`500ms`, `1s`, `2.5s`, `5m`, `1h`, `100us`, or a plain number of seconds; must be > 0
    (>= 0 with `allow_zero`, for options where 0 switches a step off)."""

    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value, param, ctx) -> float:  # type: ignore[override]
        seconds = parse_duration(value)
        if seconds is None:
            self.fail(f"{value!r} is not a duration; write e.g. 500ms, 1s, 2.5s or 5m", param, ctx)
        if not math.isfinite(seconds) or seconds > MAX_SECONDS:
            self.fail(f"{value!r} must be a finite duration of at most {MAX_SECONDS:g}s",
                      param, ctx)
        if seconds < 0 or (seconds == 0 and not self.allow_zero):
            self.fail(f"{value!r} must be greater than zero"
                      f"{' (or 0 to skip)' if self.allow_zero else ''}", param, ctx)
        return seconds


DURATION = Duration()
DURATION_OR_ZERO = Duration(allow_zero=True)


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
