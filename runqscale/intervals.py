"""A geometric mean with its 95 % interval: the statistics every paired benchmark reports
(validation's policy comparisons, the probe benchmark's ratios). Pure, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# two-sided 95 %: Student's t 0.975 quantile by degrees of freedom (1..30), normal above
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.960


@dataclass(frozen=True)
class Interval:
    """A geometric mean with its 95 % interval (None below 2 values)."""

    value: float
    ci_low: float | None
    ci_high: float | None
    n: int


def log_mean_ci(values: Sequence[float]) -> Interval:
    """Geometric mean of positive `values` and the t interval of the mean of their logs."""
    if not values:
        raise ValueError("no values")
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"values must be finite and > 0, got {list(values)}")
    logs = [math.log(v) for v in values]
    n = len(logs)
    m = sum(logs) / n
    if n < 2:
        return Interval(math.exp(m), None, None, n)
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / (n - 1))
    h = t975(n - 1) * sd / math.sqrt(n)
    return Interval(math.exp(m), math.exp(m - h), math.exp(m + h), n)
