"""The probe-cost benchmarks' builds: each ablation (probes/bench_breakdown.py) compiles from the
product's source and passes this kernel's verifier, so the benchmark measures what it names; the
program at a git revision (probes/bench_at_rev.py) builds from git and runs under today's loader,
whichever layout its slotted histograms have."""

from __future__ import annotations

import shutil
import time

import pytest
from conftest import require_root

from runqscale.probes import bench_at_rev, bench_breakdown, bench_memcg, core
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.model import ProbeReading

pytestmark = pytest.mark.kernel


# The last revision whose object keeps the slotted histograms in a per-CPU array (read with
# batch lookups); later objects lay them out in one mmapable array. Today's loader reads both.
PER_CPU_SLOTS_REV = "453c0f0"


def _load_and_read(obj: str, monkeypatch: pytest.MonkeyPatch
                   ) -> tuple[int, ProbeReading, bool]:
    """Program runs before, and a reading 0.3 s after, loading `obj` as the product does; and
    whether its slots were read through a mapping."""
    monkeypatch.setattr(core, "object_path", lambda: obj)
    probe = core.CoreProbe(CgroupMounts.read().choose("auto")[0])
    try:
        runs0 = probe.read().stats.bpf_run_count
        time.sleep(0.3)
        return runs0, probe.read(), probe._mapped
    finally:
        probe.close()


@pytest.mark.parametrize("name", list(bench_breakdown.BUILDS))
def test_each_ablation_builds_loads_and_runs_on_every_switch(
        name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    assert shutil.which("clang"), "clang is installed by `make deps`"
    obj = bench_breakdown.build(str(tmp_path), bench_breakdown.BUILDS[name])
    runs0, reading, _ = _load_and_read(obj, monkeypatch)
    assert reading.stats.bpf_run_count > runs0, "the switch program never ran"
    # only the build without the per-cgroup hash leaves the product's histograms empty
    assert bool(reading.histograms) == ("HASH" not in bench_breakdown.BUILDS[name])


@pytest.mark.parametrize(("rev", "mapped"), [("HEAD", True), (PER_CPU_SLOTS_REV, False)],
                         ids=["head", "per-cpu-slots"])
def test_the_probe_at_a_revision_builds_from_git_and_runs_under_todays_loader(
        rev: str, mapped: bool, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    obj = bench_at_rev.object_at(rev, str(tmp_path))
    runs0, reading, was_mapped = _load_and_read(obj, monkeypatch)
    assert reading.stats.bpf_run_count > runs0
    assert was_mapped is mapped
    # waits reached the histograms through the slots (every cgroup here has one)
    assert reading.histograms and sum(h.count for h in reading.histograms.values()) > 0


def test_an_unknown_revision_is_named_in_one_line(tmp_path) -> None:
    with pytest.raises(SystemExit, match="revision no-such-rev: cannot read probes/runqlat.bpf.c"):
        bench_at_rev.object_at("no-such-rev", str(tmp_path))


def test_the_memcg_bench_charges_the_mapped_slot_array_to_the_loader(tmp_path) -> None:
    """probes/bench_memcg.py end to end for the checkout's object: the slot array is mapped
    into the loader (its whole size in the RSS) and charged to the loader's memory cgroup."""
    require_root()
    got = bench_memcg.charge("-")
    assert got["bpf_map_rss_bytes"] > 0
    assert got["kmem_bytes"] >= got["bpf_map_rss_bytes"]
