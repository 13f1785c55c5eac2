"""`python -m runqscale.validation.capacity_spread`: the capacity measured as `validate --app
deathstarbench` measures it, several times on the real social network, and how far apart the
single light/loaded pairs and their medians read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from k8s_helpers import REPO

from runqscale.validation.capacity_spread import spread


def test_spread_is_the_ratio_of_the_highest_reading_to_the_lowest() -> None:
    assert spread([210.5, 271.7, 230.0]) == {"n": 3, "min_rps": 210.5, "max_rps": 271.7,
                                             "times_apart": pytest.approx(271.7 / 210.5)}
    with pytest.raises(ValueError, match="no capacity reading"):
        spread([])


@pytest.mark.kernel
@pytest.mark.services
@pytest.mark.slow
def test_two_starts_of_two_pairs_each(tmp_path) -> None:
    """Two starts of the social network, one measurement of two pairs in each: separate
    `validate` invocations' capacities, and how far apart they read."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    out = tmp_path / "spread.json"
    r = subprocess.run([sys.executable, "-m", "runqscale.validation.capacity_spread",
                        "--starts", "2", "--invocations", "1", "--capacity-repeats", "2",
                        "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = res["invocations"]
    assert [(x["start"], x["invocation"], len(x["pairs_rps"])) for x in rows] == [
        (0, 0, 2), (1, 0, 2)]
    for x in rows:  # of two pairs the lower is kept
        assert x["median_rps"] == min(x["pairs_rps"]) and x["median_rps"] > 0
    pairs = [p for x in rows for p in x["pairs_rps"]]
    assert res["single_pairs"]["times_apart"] == pytest.approx(max(pairs) / min(pairs))
    medians = [x["median_rps"] for x in rows]
    assert res["first_median_of_each_start"]["times_apart"] == pytest.approx(
        max(medians) / min(medians))
    assert res["medians"]["n"] == 2
    assert "start 1/2, invocation 1/1: " in r.stdout and "start 2/2, invocation 1/1: " in r.stdout
    assert "first median of each start " in r.stdout.splitlines()[-1]
