"""CPU quantities: Kubernetes strings ("250m", "1", "0.5", "100000n") <-> cores (float)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIX = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"),
}


def parse_cpu(text: str | int | float) -> float:
    """Cores from a CPU quantity; ValueError names the expected forms."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)([numkMG]?)\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a CPU quantity; write e.g. 250m or 1.5")
    try:
        return float(Decimal(m.group(1)) * _SUFFIX[m.group(2)])
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a CPU quantity; write e.g. 250m or 1.5") from None


def format_cpu(cores: float) -> str:
    """Millicore string, as Kubernetes canonicalises it ("1" for 1000m, "1500m", min 1m)."""
    milli = max(1, int(round(cores * 1000)))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"
