"""Decision time at two revisions, paired: this checkout's decision-time benchmark
(`scaler/bench.py`: the same windows, warm-up and timing) run on each revision's policies in
alternated rounds (ABBA), each round's ratio read from the two runs beside each other.

    python -m runqscale.scaler.bench_at_rev d793352 --rounds 6 --out at-rev.json
    python -m runqscale.scaler.bench_at_rev OLD NEW --rounds 4 --out at-rev.json

Each run is a fresh process with that revision's whole package on PYTHONPATH
(`runqscale/revtree.py`); the figure per run is the bench's least disturbed repeat's CPU time
(`cpu_min_ms`). Prints one line per run and the ratios second / first with their 95 % intervals,
and writes them, with every run and the kinds of decision it timed, to `--out` (meanwhile the
runs so far to `--out`.partial).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from runqscale import revtree
from runqscale.intervals import log_mean_ci
from runqscale.revtree import WORKTREE

TOOL = "runqscale.scaler.bench_at_rev"
BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py")
# bench.py run by path, without the scaler/ directory on sys.path (which `python FILE` would
# add): the revision's package must be the only runqscale the child sees
_RUN = ("import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')")


def one_run(rev: str, path: str, workloads: int, repeat: int, work: str) -> dict[str, Any]:
    """One run of this checkout's bench on `rev`'s package, laid out at `path`: its JSON."""
    out = os.path.join(work, "bench.json")
    if os.path.exists(out):  # a run that writes nothing must not read as the one before
        os.remove(out)
    # cwd: `-c` puts it first on sys.path, and a checkout's own runqscale/ would shadow the tree
    revtree.run_python(path, ["-c", _RUN, BENCH, "--out", out, "--workloads", str(workloads),
                              "--repeat", str(repeat)],
                       f"{TOOL}: the bench failed on revision {rev}", cwd=work)
    with open(out) as f:
        return json.load(f)


def commit_of(repo: str, rev: str) -> str:
    """The commit a revision name stood for when measured (HEAD moves); WORKTREE as is."""
    if rev == WORKTREE:
        return rev
    r = subprocess.run(["git", "-C", repo, "rev-parse", "--short=12", rev], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"{TOOL}: no revision {rev!r} in {repo}: {r.stderr.strip()[-200:]}")
    return r.stdout.strip()


def order(rounds: int) -> list[tuple[int, int]]:
    """ABBA: the first revision first in even rounds, second in odd ones."""
    return [(0, 1) if i % 2 == 0 else (1, 0) for i in range(rounds)]


def paired_ratios(runs: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Per policy, the geometric mean of each round's second / first revision (`k` 1 over 0)
    with its 95 % interval; a policy missing from a round's run is left out of that pair."""
    ratios: dict[str, Any] = {}
    names = dict.fromkeys(n for r in runs for n in r["cpu_min_ms"])  # both revisions', in order
    for name in names:
        per_round = []
        for i in range(rounds):
            by_k = {r["k"]: r["cpu_min_ms"].get(name) for r in runs if r["round"] == i}
            first, second = by_k.get(0), by_k.get(1)
            if first and second:
                per_round.append(second / first)
        if len(per_round) < rounds:
            print(f"{TOOL}: {name}: {rounds - len(per_round)} of {rounds} rounds without a "
                  f"time from both revisions, left out", file=sys.stderr)
        if len(per_round) >= 2:
            iv = log_mean_ci(per_round)
            ratios[name] = {"ratio": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high,
                            "pairs": iv.n}
    return ratios


def write(out: str, doc: dict[str, Any]) -> None:
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {TOOL}", description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="+", help="one revision (against the checkout) or two")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--workloads", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", required=True, help="write the runs and ratios (JSON) here")
    a = ap.parse_args(argv)
    if len(a.revs) > 2:
        ap.error("give one revision (compared with the checkout) or two")
    if a.rounds < 2 or a.rounds % 2:
        ap.error("--rounds must be even and >= 2: ABBA pairs, each revision first as often")
    revs = [*a.revs, WORKTREE] if len(a.revs) == 1 else a.revs
    if revtree.checkout_dir("", revs[0]) == revtree.checkout_dir("", revs[1]):
        ap.error(f"the two revisions are both {revs[0]}: give two different names (to time a "
                 f"commit against itself: HEAD HEAD~0)")
    repo = revtree.repo_root(TOOL)
    doc: dict[str, Any] = {"revs": revs, "commits": [commit_of(repo, r) for r in revs],
                           "workloads": a.workloads, "repeat": a.repeat,
                           "rounds": a.rounds, "complete": False, "runs": [], "ratios": {},
                           "command": " ".join(["python -m", TOOL, *(argv or sys.argv[1:])])}
    # the runs so far go to a side file, which also finds an unwritable --out's directory now,
    # not after the rounds; --out itself is replaced only by a complete result
    partial = a.out + ".partial"
    write(partial, doc)
    runs: list[dict[str, Any]] = doc["runs"]
    with tempfile.TemporaryDirectory(prefix="runqscale-bench-at-rev-") as tmp:
        try:
            paths = [revtree.layout(revtree.checkout(r, repo, tmp), tmp, r) for r in revs]
            for i, pair in enumerate(order(a.rounds)):
                for k in pair:
                    res = one_run(revs[k], paths[k], a.workloads, a.repeat, tmp)
                    cpu = {n: p["cpu_min_ms"] for n, p in res["policies"].items()}
                    runs.append({"round": i, "rev": revs[k], "k": k, "cpu_min_ms": cpu,
                                 "load_average_1m": res["load_average_1m"],
                                 # what was timed: the kinds of decision, per policy
                                 "decisions": {n: p.get("decisions")
                                               for n, p in res["policies"].items()}})
                    write(partial, doc)  # the runs so far survive a later failure
                    print(f"round {i + 1}/{a.rounds} {revs[k]}: showar {cpu['showar']:.1f} ms, "
                          f"hpa {cpu['hpa']:.1f} ms (load {res['load_average_1m']:.2f})",
                          flush=True)
        finally:
            revtree.remove_worktrees(repo, tmp, revs)
    doc["ratios"] = ratios = paired_ratios(runs, a.rounds)
    for name, r in ratios.items():
        print(f"{name}: {revs[1]} / {revs[0]} = {r['ratio']:.3f} "
              f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] ({r['pairs']} pairs)")
    doc["complete"] = True
    write(partial, doc)
    os.replace(partial, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
