"""`python -m runqscale.scaler.decisions_at_rev`: the tool behind "showar's decisions are
unchanged" claims. End to end against the checkout's own HEAD (a git worktree laid out as the
package, the replay in its own process): identical when nothing changed; the comparison names
the first decision that differs; the closed loop exercises showar's actions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

from runqscale.scaler import bench_at_rev, decisions_at_rev


def test_the_checkout_against_its_own_head_is_identical(tmp_path) -> None:
    # CI runs on a clean clone, where WORKTREE is HEAD; locally uncommitted showar changes
    # would differ, so compare HEAD with itself through two worktrees
    r = subprocess.run([sys.executable, "-m", "runqscale.scaler.decisions_at_rev", "HEAD",
                        "HEAD~0", "--workloads", "6", "--steps", "30", "--spacing", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "180 decisions (6 workloads x 30, a sample every 3 s) identical: HEAD and HEAD~0" \
        in r.stdout


def test_the_first_difference_is_found() -> None:
    a = ["0 0 x\n", "0 1 y\n", "0 2 z\n"]
    assert decisions_at_rev.first_difference(a, list(a)) is None
    assert decisions_at_rev.first_difference(a, [a[0], "0 1 Y\n", a[2]]) == 1
    assert decisions_at_rev.first_difference(a, a[:2]) == 2


def test_the_closed_loop_takes_every_kind_of_action() -> None:
    lines = list(decisions_at_rev.closed_loop(12, 60))
    assert len(lines) == 720
    actions = Counter(a for line in lines for a in ("resize", "scale_out", "scale_in", "none")
                      if f"action='{a}'" in line)
    assert all(actions[a] > 0 for a in ("resize", "scale_out", "scale_in", "none")), actions
    assert list(decisions_at_rev.closed_loop(2, 20)) == list(decisions_at_rev.closed_loop(2, 20))


def test_sparser_windows_are_a_different_replay() -> None:
    """`--spacing 3` replays windows of every third second: other inputs, other decisions (a
    replay that ignored it would check the one-second path twice)."""
    dense = list(decisions_at_rev.closed_loop(6, 30))
    sparse = list(decisions_at_rev.closed_loop(6, 30, spacing=3))
    assert len(dense) == len(sparse) == 180
    assert dense != sparse


def test_decision_time_at_two_revisions_is_paired(tmp_path) -> None:
    """`python -m runqscale.scaler.bench_at_rev`: this checkout's bench on each revision's
    policies, in alternated rounds, with a ratio and interval per policy."""
    out = tmp_path / "at-rev.json"
    r = subprocess.run([sys.executable, "-m", "runqscale.scaler.bench_at_rev", "HEAD", "HEAD~0",
                        "--rounds", "2", "--workloads", "20", "--repeat", "1", "--out",
                        str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(out.read_text())
    assert [(run["round"], run["rev"]) for run in result["runs"]] == [
        (0, "HEAD"), (0, "HEAD~0"), (1, "HEAD~0"), (1, "HEAD")]
    assert result["complete"] and result["ratios"]["showar"]["pairs"] == 2
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert result["commits"] == [head, head]
    assert sum(result["runs"][0]["decisions"]["showar"].values()) == 20
    assert "showar: HEAD~0 / HEAD = " in r.stdout
    assert not (tmp_path / "at-rev.json.partial").exists()


def test_paired_ratios_are_second_over_first_within_each_round(capsys) -> None:
    def run(i: int, k: int, ms: float) -> dict:
        return {"round": i, "k": k, "rev": "AB"[k], "cpu_min_ms": {"showar": ms}}

    # ABBA, the second revision twice as fast; round 1 has its runs in B, A order
    runs = [run(0, 0, 100.0), run(0, 1, 50.0), run(1, 1, 60.0), run(1, 0, 120.0),
            run(2, 0, 90.0), run(2, 1, 45.0), run(3, 1, 40.0)]  # round 3 lost its A run
    ratios = bench_at_rev.paired_ratios(runs, 4)
    showar = ratios["showar"]
    assert showar["pairs"] == 3 and abs(showar["ratio"] - 0.5) < 1e-12
    assert "1 of 4 rounds without a time from both revisions" in capsys.readouterr().err


def test_bench_at_rev_refuses_what_cannot_pair(tmp_path) -> None:
    for args, words in ((["HEAD", "HEAD"], "both HEAD"), (["HEAD", "--rounds", "3"], "even")):
        r = subprocess.run([sys.executable, "-m", "runqscale.scaler.bench_at_rev", *args,
                            "--out", str(tmp_path / "x.json")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr, r.stderr
