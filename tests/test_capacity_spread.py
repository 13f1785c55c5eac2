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
def test_two_invocations_of_two_pairs_each(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    out = tmp_path / "spread.json"
    r = subprocess.run([sys.executable, "-m", "runqscale.validation.capacity_spread",
                        "--invocations", "2", "--capacity-repeats", "2", "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = res["invocations"]
    assert [len(x["pairs_rps"]) for x in rows] == [2, 2]
    for x in rows:  # of two pairs the lower is kept
        assert x["median_rps"] == min(x["pairs_rps"]) and x["median_rps"] > 0
    pairs = [p for x in rows for p in x["pairs_rps"]]
    assert res["single_pairs"]["times_apart"] == pytest.approx(max(pairs) / min(pairs))
    assert res["medians"]["n"] == 2 and r.stdout.count("invocation ") == 2
    assert "single pairs " in r.stdout.splitlines()[-1]
