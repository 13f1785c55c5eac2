"""The validation loops' signals carry the run-queue wait split by holder, as Prometheus's do, so
a policy reading scaler/policies/attribution.py sees the same fields in `validate` runs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from runqscale.agent.sampler import CgroupSample
from runqscale.probes.model import HOLDERS, SLOTS, CgroupHistogram
from runqscale.scaler.model import HOLDER_FIELDS
from runqscale.scaler.policies.attribution import attribute
from runqscale.validation.window import interval_totals, make_sample, signal_fields, window_signals


def _cg(cid: int, held_ms: list[int] | None) -> CgroupSample:
    total_ns = sum(held_ms or [5]) * 1_000_000
    slots = np.zeros(SLOTS, np.uint64)
    slots[100] = 3
    held = None if held_ms is None else np.array(held_ms, np.uint64) * 1_000_000
    h = CgroupHistogram(cid, slots, total_ns, 3, held)
    return CgroupSample(cid, f"/r{cid}", h, None, None, None)


def test_replicas_splits_add_up_per_wall_second_and_feed_the_attribution() -> None:
    # two replicas, 1 s ticks: mostly behind other cgroups
    tick = replace(interval_totals([_cg(1, [10, 300, 0, 5]), _cg(2, [20, 500, 5, 0])]),
                   seconds=1.0)
    sig = window_signals([tick, tick])
    want = {"same_cgroup": 0.03, "other_cgroup": 0.8, "kernel": 0.005, "idle": 0.005}
    assert sig.wait_by_holder_per_second is not None
    assert {h: round(v, 9) for h, v in sig.wait_by_holder_per_second.items()} == want
    assert sum(want.values()) == pytest.approx(sig.runq_wait_seconds_per_second)
    s = make_sample(ts=1.0, workload=None, **signal_fields(sig))
    split = {h: getattr(s, f) for h, f in HOLDER_FIELDS.items()}
    assert attribute(split, sig.throttled_seconds_per_second).cause == "neighbours"


def test_a_replica_that_cannot_split_leaves_the_fields_missing() -> None:
    tick = replace(interval_totals([_cg(1, [10, 300, 0, 5]), _cg(2, None)]), seconds=1.0)
    assert tick.held_seconds is None
    fields = signal_fields(window_signals([tick]))
    assert all(fields[f] is None for f in HOLDER_FIELDS.values())
    assert set(HOLDER_FIELDS) == set(HOLDERS)
