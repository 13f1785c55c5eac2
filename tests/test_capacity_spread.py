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
def test_two_starts_of_two_measurements_each(tmp_path) -> None:
    """Two starts of the social network, two measurements of one pair in each: separate
    `validate` invocations' capacities (each start's first), and how far apart they read."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    out = tmp_path / "spread.json"
    r = subprocess.run([sys.executable, "-m", "runqscale.validation.capacity_spread",
                        "--starts", "2", "--invocations", "2", "--capacity-repeats", "1",
                        "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = res["invocations"]
    assert [(x["start"], x["invocation"], len(x["pairs_rps"])) for x in rows] == [
        (0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1)]
    for x in rows:  # one pair: its reading is the median
        assert x["median_rps"] == x["pairs_rps"][0] > 0
    medians = [x["median_rps"] for x in rows]
    assert res["medians"]["times_apart"] == pytest.approx(max(medians) / min(medians))
    firsts = [x["median_rps"] for x in rows if x["invocation"] == 0]
    assert res["first_median_of_each_start"] == {
        "n": 2, "min_rps": min(firsts), "max_rps": max(firsts),
        "times_apart": pytest.approx(max(firsts) / min(firsts))}
    for where in ("start 1/2, invocation 1/2: ", "start 1/2, invocation 2/2: ",
                  "start 2/2, invocation 1/2: ", "start 2/2, invocation 2/2: "):
        assert where in r.stdout
    assert "first median of each start " in r.stdout.splitlines()[-1]
