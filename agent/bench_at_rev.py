"""The agent as it was at git revisions, against each other on the same live cgroups (a
benchmark, not a test).

    python -m runqscale.agent.bench_at_rev 4b78703 WORKTREE --rounds 6 --out at-rev.json

Each revision's tree is checked out on its own (a git worktree, its probe object built from its
own sources) and laid out as the installed package, so `runqscale agent` runs that revision's
code. One process holds --cgroups live cgroups (agent/bench.py's worker) for the whole run; in
each round every revision's agent runs --seconds on them, scraped every --scrape-every seconds
as Prometheus would, in an order reversed every other round (ABBA), so drift and noise fall on
both alike. Reported per revision: CPU (fraction of a core: utime + stime over the run) and
scrape CPU; against the first revision: the ratio of CPU (geometric mean of the rounds' ratios, 95 %
t interval on the log ratios). `WORKTREE` is the checkout as it is now, uncommitted changes
included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from importlib import resources

from runqscale.agent import bench
from runqscale.intervals import log_mean_ci

WORKTREE = "WORKTREE"
SUBPACKAGES = ("probes", "agent", "exporter", "scaler", "validation", "deathstarbench")
# Imported first from PYTHONPATH: takes the editable install's finder out, so `runqscale` comes
# from the laid-out tree, in the benchmark and in the agents it starts.
_SITECUSTOMIZE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
for _m in [m for m in sys.modules if m == "runqscale" or m.startswith("runqscale.")]:
    del sys.modules[_m]
"""


def _repo() -> str:
    here = str(resources.files("runqscale.agent"))
    out = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit("runqscale.agent.bench_at_rev: needs a git checkout of runqscale")
    return out.stdout.strip()


def _checkout_dir(work: str, rev: str) -> str:
    return os.path.join(work, "src-" + rev.replace("/", "_"))


def tree_at(rev: str, repo: str, work: str) -> str:
    """A PYTHONPATH entry under which `runqscale` is the code of `rev`."""
    from runqscale.probes.bench_at_rev import object_at

    if rev == WORKTREE:
        src = repo
    else:
        src = _checkout_dir(work, rev)
        r = subprocess.run(["git", "-C", repo, "worktree", "add", "--detach", src, rev],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"revision {rev}: {r.stderr.strip()[-300:]}")
        shutil.copy(object_at(rev, os.path.join(work, "obj")), os.path.join(src, "probes"))
    root = os.path.join(work, "path-" + rev.replace("/", "_"))
    pkg = os.path.join(root, "runqscale")
    os.makedirs(pkg)
    for name in os.listdir(os.path.join(src, "runqscale")):
        if name.endswith(".py"):
            shutil.copy(os.path.join(src, "runqscale", name), pkg)
    for sub in SUBPACKAGES:
        os.symlink(os.path.join(src, sub), os.path.join(pkg, sub))
    with open(os.path.join(root, "sitecustomize.py"), "w") as f:
        f.write(_SITECUSTOMIZE)
    return root


def _one(path: str, pods_file: str, seconds: float, scrape_every: float) -> dict:
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path  # the agent process inherits it
    try:
        a = bench.Agent("--pods-file", pods_file)
    finally:
        _restore("PYTHONPATH", saved)
    try:
        time.sleep(3)  # every container seen and labelled, the window filled
        a.scrape()
        cpu, scrapes = bench.cpu_while_scraped(a, seconds, scrape_every)
    finally:
        a.stop()
    return {"cpu_core_fraction": cpu, "scrape_cpu_seconds": scrapes,
            "loadavg": os.getloadavg()[0]}


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def run(revs: list[str], paths: dict[str, str], n: int, rounds: int, seconds: float,
        scrape_every: float, pods_file: str) -> dict:
    runs: dict[str, list[dict]] = {r: [] for r in revs}
    with bench.live_cgroups(n, pods_file):
        for r in range(rounds):
            for rev in revs if r % 2 == 0 else revs[::-1]:
                res = _one(paths[rev], pods_file, seconds, scrape_every)
                runs[rev].append(res)
                print(f"[round {r + 1}/{rounds}] {rev}: {res['cpu_core_fraction']:.3%} of a "
                      f"core, scrapes {[round(s * 1e3) for s in res['scrape_cpu_seconds']]}"
                      f" ms CPU, load {res['loadavg']:.2f}", flush=True)
    out: dict = {"kernel": os.uname().release, "cpus": os.cpu_count(), "cgroups": n,
                 "rounds": rounds, "seconds": seconds, "scrape_every_seconds": scrape_every,
                 "revisions": {}, "ratios": {}}
    if any(x["cpu_core_fraction"] <= 0 for rs in runs.values() for x in rs):
        raise SystemExit("runqscale.agent.bench_at_rev: error: a run measured no CPU tick "
                         "(10 ms); give it more --seconds or --cgroups")
    for rev in revs:
        cpu = [x["cpu_core_fraction"] for x in runs[rev]]
        iv = log_mean_ci(cpu)
        scr = [s for x in runs[rev] for s in x["scrape_cpu_seconds"]]
        out["revisions"][rev] = {"cpu_core_fraction": cpu, "cpu_geomean": iv.value,
                                 "cpu_ci_low": iv.ci_low, "cpu_ci_high": iv.ci_high,
                                 "scrape_cpu_seconds_median": statistics.median(scr),
                                 "runs": runs[rev]}
    first = runs[revs[0]]
    for rev in revs[1:]:  # b / a per round: geometric mean, 95 % t interval on the logs
        iv = log_mean_ci([y["cpu_core_fraction"] / x["cpu_core_fraction"]
                          for x, y in zip(first, runs[rev], strict=True)])
        out["ratios"][f"{rev}/{revs[0]}"] = {"ratio": iv.value, "ci_low": iv.ci_low,
                                             "ci_high": iv.ci_high, "pairs": iv.n}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="+", help=f"git revisions, or {WORKTREE} for the checkout")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--cgroups", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--scrape-every", type=float, default=15.0)
    ap.add_argument("--out", default="bench-results/agent-at-rev.json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("runqscale.agent.bench_at_rev: error: needs root (BPF and cgroups)")
    if len(set(a.revs)) != len(a.revs) or a.rounds < 2:
        raise SystemExit("runqscale.agent.bench_at_rev: error: give distinct revisions and "
                         "--rounds 2 or more")
    repo = _repo()
    with tempfile.TemporaryDirectory(prefix="runqscale-agent-at-rev-") as tmp:
        try:
            paths = {rev: tree_at(rev, repo, tmp) for rev in a.revs}
            res = run(a.revs, paths, a.cgroups, a.rounds, a.seconds, a.scrape_every,
                      os.path.join(tmp, "pods.json"))
        finally:  # the worktrees go with the directory; git forgets them too
            for rev in a.revs:
                src = _checkout_dir(tmp, rev)
                if rev != WORKTREE and os.path.isdir(src):
                    subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", src],
                                   capture_output=True)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\n{'revision':<12}{'CPU, % of a core (95 % CI)':>30}{'scrape CPU ms':>15}")
    for rev, v in res["revisions"].items():
        ci = f"{v['cpu_geomean']:.3%} [{v['cpu_ci_low']:.3%}, {v['cpu_ci_high']:.3%}]"
        print(f"{rev:<12}{ci:>30}{v['scrape_cpu_seconds_median'] * 1e3:>15.1f}")
    for name, r in res["ratios"].items():
        print(f"{name}: {r['ratio']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
              f"({r['pairs']} paired rounds)")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
