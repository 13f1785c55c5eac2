"""The probe-cost breakdown's builds (probes/bench_breakdown.py): each ablation compiles from the
product's source and passes this kernel's verifier, so the benchmark measures what it names."""

from __future__ import annotations

import shutil
import time

import pytest
from conftest import require_root

from runqscale.probes import bench_breakdown, core
from runqscale.probes.cgroupfs import CgroupMounts

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("name", list(bench_breakdown.BUILDS))
def test_each_ablation_builds_loads_and_runs_on_every_switch(
        name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    assert shutil.which("clang"), "clang is installed by `make deps`"
    obj = bench_breakdown.build(str(tmp_path), bench_breakdown.BUILDS[name])
    monkeypatch.setattr(core, "object_path", lambda: obj)
    probe = core.CoreProbe(CgroupMounts.read().choose("auto")[0])
    try:
        runs0 = probe.read().stats.bpf_run_count
        time.sleep(0.3)
        reading = probe.read()
    finally:
        probe.close()
    assert reading.stats.bpf_run_count > runs0, "the switch program never ran"
    # only the build without the per-cgroup hash leaves the product's histograms empty
    assert bool(reading.histograms) == ("HASH" not in bench_breakdown.BUILDS[name])
