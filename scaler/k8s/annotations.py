"""Per-workload opt-in through annotations, validated with one-line errors.

    runqscale.io/policy: showar            # opt in; one of the scaler's policies
    runqscale.io/min-replicas: "2"         # optional, default the scaler's --min-replicas
    runqscale.io/max-replicas: "10"        # optional, default the scaler's --max-replicas
    runqscale.io/target-runq-p95: 5ms      # optional, default the scaler's target

A bad value raises `AnnotationError`, whose text names the annotation, what is wrong and the fix;
the controller records it as a Warning Event on the workload and goes on with the others.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from runqscale.scaler.model import ScalerConfig
from runqscale.values import parse_duration

PREFIX = "runqscale.io/"
POLICY = PREFIX + "policy"
MIN_REPLICAS = PREFIX + "min-replicas"
MAX_REPLICAS = PREFIX + "max-replicas"
TARGET_RUNQ_P95 = PREFIX + "target-runq-p95"
KNOWN = (POLICY, MIN_REPLICAS, MAX_REPLICAS, TARGET_RUNQ_P95)

_UNITS = ("ns", "us", "µs", "ms", "s")  # a run-queue target: a unit always, minutes never


class AnnotationError(ValueError):
    """`<annotation>: <what is wrong>; <fix>` (one line)."""

    def __init__(self, annotation: str, problem: str, fix: str) -> None:
        self.annotation = annotation
        super().__init__(f"{annotation}: {problem}; {fix}")


@dataclass(frozen=True)
class WorkloadSpec:
    """What a workload asked for: a policy name and its bounds/target."""

    policy: str
    config: ScalerConfig


def _int(annotations: Mapping[str, str], key: str, minimum: int) -> int | None:
    raw = annotations.get(key)
    if raw is None:
        return None
    text = raw.strip()
    if not re.fullmatch(r"[0-9]+", text) or int(text) < minimum:
        raise AnnotationError(
            key,
            f"{raw!r} is not a whole number >= {minimum}",
            f'set it like {key}: "{minimum + 2}"',
        )
    return int(text)


def _duration(annotations: Mapping[str, str], key: str) -> float | None:
    raw = annotations.get(key)
    if raw is None:
        return None
    seconds = parse_duration(raw, _UNITS)
    if seconds is None or not 0 < seconds < float("inf"):
        raise AnnotationError(
            key, f"{raw!r} is not a positive duration with a unit", f"set it like {key}: 5ms"
        )
    return seconds


def parse(
    annotations: Mapping[str, str] | None, defaults: ScalerConfig, policies: tuple[str, ...]
) -> WorkloadSpec | None:
    """The workload's spec, None if it has not opted in (no policy annotation)."""
    ann = dict(annotations or {})
    policy = ann.get(POLICY)
    if policy is None:
        return None
    policy = policy.strip()
    for key in sorted(ann):
        if key.startswith(PREFIX) and key not in KNOWN:
            near = difflib.get_close_matches(key, KNOWN, n=1)
            fix = f"did you mean {near[0]}?" if near else f"use one of {', '.join(KNOWN)}"
            raise AnnotationError(key, "unknown runqscale annotation", fix)
    if policy not in policies:
        raise AnnotationError(
            POLICY, f"unknown policy {policy!r}", f"use one of {', '.join(policies)}"
        )
    lo = _int(ann, MIN_REPLICAS, 0)
    hi = _int(ann, MAX_REPLICAS, 1)
    target = _duration(ann, TARGET_RUNQ_P95)
    lo_v = defaults.min_replicas if lo is None else lo
    hi_v = defaults.max_replicas if hi is None else hi
    if hi_v < max(lo_v, 1):
        key = MAX_REPLICAS if hi is not None else MIN_REPLICAS
        raise AnnotationError(
            key,
            f"min-replicas {lo_v} is above max-replicas {hi_v}",
            f"make {MIN_REPLICAS} <= {MAX_REPLICAS}",
        )
    cfg = replace(
        defaults,
        min_replicas=lo_v,
        max_replicas=hi_v,
        target_runq_p95_seconds=defaults.target_runq_p95_seconds if target is None else target,
    )
    return WorkloadSpec(policy, cfg)
