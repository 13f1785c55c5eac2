"""Option values every command shares (durations, listen addresses), parsed without click: the
agent's DaemonSet process parses its flags with argparse (agent/options.py) and must not pay
for click's import. runqscale/params.py wraps these for the click commands. Each parser returns
the value or raises ValueError with the problem and the fix, for the caller to prefix with the
option's name."""

from __future__ import annotations

import math
import re
from collections.abc import Collection

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


def duration_seconds(value: object, allow_zero: bool = False) -> float:
    """`500ms`, `1s`, `2.5s`, `5m`, `1h`, `100us`, or a plain number of seconds; must be > 0
    (>= 0 with `allow_zero`, for options where 0 switches a step off)."""
    seconds = parse_duration(value)
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration; write e.g. 500ms, 1s, 2.5s or 5m")
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"{value!r} must be a finite duration of at most {MAX_SECONDS:g}s")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{value!r} must be greater than zero"
                         f"{' (or 0 to skip)' if allow_zero else ''}")
    return seconds


def listen_address(value: object) -> tuple[str, int]:
    """`:9100` (all interfaces), `127.0.0.1:9100`, `[::1]:9100`, `0.0.0.0:0` (any free port)."""
    if isinstance(value, tuple):
        return value
    m = re.fullmatch(r"\s*(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):([0-9]{1,5})\s*", str(value))
    if not m or int(m.group(3)) > 65535:
        raise ValueError(f"{value!r} is not host:port; write e.g. :9100 or 127.0.0.1:9100")
    return m.group(1) or m.group(2) or "0.0.0.0", int(m.group(3))
