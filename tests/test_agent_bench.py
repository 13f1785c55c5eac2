"""The agent benchmark's RSS figures: the import floor under the agent before it reads any
cgroup, and the part of the RSS that is the probe's mapped slot array."""

from __future__ import annotations

import os

import pytest
from conftest import require_root

from runqscale.agent.bench import IMPORT_STAGES, _bpf_map_rss, import_floor
from runqscale.probes.core import CoreProbe
from runqscale.probes.model import Hierarchy


def test_the_import_floor_reports_every_stage_in_order_and_cumulatively() -> None:
    floor = import_floor()
    assert [s["stage"] for s in floor] == [name for name, _ in IMPORT_STAGES]
    for s in floor:
        assert s["VmRSS"] >= s["RssAnon"] + s["RssFile"] > 0
    rss = [s["VmRSS"] for s in floor]
    # each stage adds modules and unloads none (glibc may give back a little freed heap)
    assert all(b > a - (1 << 20) for a, b in zip(rss, rss[1:], strict=False))
    numpy = [name for name, _ in IMPORT_STAGES].index("numpy")
    assert rss[numpy] - rss[numpy - 1] > 10 << 20  # numpy alone is more than 10 MB


@pytest.mark.kernel
def test_the_bench_tells_the_mapped_slot_array_apart_in_the_rss() -> None:
    """The probe's slot array, mapped into the process, is counted as BPF map RSS (whole: the
    kernel maps every page at once), and nothing is before the probe maps it."""
    require_root()
    before = _bpf_map_rss(os.getpid())
    probe = CoreProbe(Hierarchy.V1_CPU)
    try:
        mapped = _bpf_map_rss(os.getpid())
        size = len(probe._slot_hists._mm)  # type: ignore[union-attr]
    finally:
        probe.close()
    assert before == 0
    assert mapped == size > 0
    assert _bpf_map_rss(os.getpid()) == 0, "the mapping outlived close()"
