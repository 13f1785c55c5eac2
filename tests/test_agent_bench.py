"""The agent benchmark's import floor: the RSS under the agent before it reads any cgroup."""

from __future__ import annotations

from runqscale.agent.bench import IMPORT_STAGES, import_floor


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
