"""The signals the validation loops measure: one tick's totals over a set of cgroups, and the
signals over the last ticks (the window a `Sample` carries), shared by the runlang and the
DeathStarBench loops."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from runqscale.agent.sampler import CgroupSample
from runqscale.probes.model import HOLDERS, quantile_seconds
from runqscale.scaler.model import HOLDER_FIELDS, Sample


@dataclass(frozen=True)
class Tally:
    """One tick of a set of cgroups (a workload's replicas)."""

    slots: np.ndarray | None  # merged run-queue wait histogram (None: no cgroup)
    wait_seconds: float = 0.0  # Σ run-queue wait of their tasks
    periods_throttled: int = 0
    periods: int = 0
    throttled_seconds: float = 0.0  # Σ CFS throttled time (v1 throttled_time, v2 _usec)
    pressure_seconds: float | None = None  # Σ cpu.pressure "some" time (None: no PSI, v1)
    pressure_cgroups: int = 0  # cgroups that gave a pressure value
    used_seconds: float = 0.0  # CPU seconds used (filled by the loop)
    seconds: float = 0.0  # wall seconds of the tick (filled by the loop)
    sent: float = 0.0  # requests sent (filled by the loop)
    # wait_seconds split by what held the CPU (probes HOLDERS order); None: the backend cannot
    # tell (bcc), or no cgroup
    held_seconds: np.ndarray | None = None


def interval_totals(cgroups: Iterable[CgroupSample]) -> Tally:
    slots, wait, thr_n, thr_d, thr_s = None, 0.0, 0, 0, 0.0
    psi, psi_n = None, 0
    held: np.ndarray | None = np.zeros(len(HOLDERS))
    for cs in cgroups:
        slots = cs.delta.slots.copy() if slots is None else slots + cs.delta.slots
        wait += cs.wait_seconds
        h = cs.delta.held_ns
        held = None if h is None or held is None else held + h / 1e9
        b, a = cs.cpu_before, cs.cpu
        if not (a and b):
            continue
        if a.nr_periods is not None and b.nr_periods is not None:
            thr_d += a.nr_periods - b.nr_periods
            thr_n += (a.nr_throttled or 0) - (b.nr_throttled or 0)
        if a.throttled_seconds is not None and b.throttled_seconds is not None:
            thr_s += max(0.0, a.throttled_seconds - b.throttled_seconds)
        if a.pressure_some_seconds is not None and b.pressure_some_seconds is not None:
            psi = (psi or 0.0) + max(0.0, a.pressure_some_seconds - b.pressure_some_seconds)
            psi_n += 1
    return Tally(slots, wait, thr_n, thr_d, thr_s, psi, psi_n,
                 held_seconds=held if slots is not None else None)


@dataclass(frozen=True)
class WindowSignals:
    runq_p95_seconds: float | None
    throttled_ratio: float  # 0 when no CFS period ran (no quota)
    cpu_usage_cores: float
    request_rate: float
    runq_wait_seconds_per_second: float  # Σ wait of all replicas' tasks per wall second
    throttled_seconds_per_second: float  # Σ throttled time of all replicas per wall second
    pressure: float | None  # mean over replicas of their cpu.pressure "some" share; None on v1
    # runq_wait_seconds_per_second split by holder (HOLDER_FIELDS keys); None where a tick of
    # the window could not split it
    wait_by_holder_per_second: dict[str, float] | None = None


def window_signals(win: Iterable[Tally]) -> WindowSignals:
    """The signals over the last ticks: p95 of the merged histogram, Σ throttled / Σ periods,
    and per wall second of the window: cores used, requests, wait seconds, throttled seconds."""
    win = list(win)
    total = None
    for t in win:
        if t.slots is not None:
            total = t.slots.copy() if total is None else total + t.slots
    wdt = max(1e-9, sum(t.seconds for t in win))
    tn, td = sum(t.periods_throttled for t in win), sum(t.periods for t in win)
    psi = [t for t in win if t.pressure_seconds is not None and t.pressure_cgroups]
    pressure = (sum(t.pressure_seconds / t.pressure_cgroups for t in psi)  # type: ignore[operator]
                / max(1e-9, sum(t.seconds for t in psi))) if psi else None
    split = [t.held_seconds for t in win if t.slots is not None]
    by_holder = None
    if split and all(h is not None for h in split):
        per_s = sum(split) / wdt  # type: ignore[arg-type]
        by_holder = {h: float(v) for h, v in zip(HOLDERS, per_s, strict=True)}
    return WindowSignals(
        quantile_seconds(total, 0.95) if total is not None else None,
        tn / td if td > 0 else 0.0, sum(t.used_seconds for t in win) / wdt,
        sum(t.sent for t in win) / wdt, sum(t.wait_seconds for t in win) / wdt,
        sum(t.throttled_seconds for t in win) / wdt, pressure, by_holder)


_SAMPLE_FIELDS = frozenset(f.name for f in dataclasses.fields(Sample))


def make_sample(**kw: object) -> Sample:
    """A `Sample` with these fields; signals the model does not carry yet are left out (the new
    fields land in scaler/model.py separately)."""
    return Sample(**{k: v for k, v in kw.items() if k in _SAMPLE_FIELDS})  # type: ignore[arg-type]


def signal_fields(sig: WindowSignals) -> dict:
    """The window's signals as `Sample` keyword arguments."""
    return {"cpu_usage_cores": sig.cpu_usage_cores, "runq_p95_seconds": sig.runq_p95_seconds,
            "throttled_ratio": sig.throttled_ratio, "request_rate": sig.request_rate,
            "runq_wait_seconds_per_second": sig.runq_wait_seconds_per_second,
            "throttled_seconds_per_second": sig.throttled_seconds_per_second,
            "pressure": sig.pressure,
            **{f: (sig.wait_by_holder_per_second or {}).get(h) for h, f in HOLDER_FIELDS.items()}}
