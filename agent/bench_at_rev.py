"""The agent as it was at git revisions, against each other on the same live cgroups (a
benchmark, not a test).

    python -m runqscale.agent.bench_at_rev 4b78703 WORKTREE --rounds 6 --out at-rev.json
    python -m runqscale.agent.bench_at_rev WORKTREE WORKTREE+--gzip --rounds 4   # a flag's cost
    python -m runqscale.agent.bench_at_rev --install image WORKTREE WORKTREE+py: --rounds 4
        # the checkout installed as the image installs it, run as the DaemonSet runs it (-OO)
        # and with no interpreter flag (`py:FLAGS`: the interpreter's flags, comma-separated)
    python -m runqscale.agent.bench_at_rev --install image WORKTREE WORKTREE+mod:runqscale.cli,agent
        # started as the DaemonSet starts it, and as `python -m runqscale.cli agent`
        # (`mod:MODULE[,ARGS]`: what follows the interpreter's `-m`)

Each revision's tree is checked out on its own (a git worktree, its probe object built from its
own sources) and laid out as the installed package, so `runqscale agent` runs that revision's
code. One process holds --cgroups live cgroups (agent/bench.py's worker) for the whole run; in
each round every revision's agent runs --seconds on them, scraped every --scrape-every seconds
as Prometheus would, in an order reversed every other round (ABBA), so drift and noise fall on
both alike. Reported per revision: CPU (fraction of a core: utime + stime over the run) and
scrape CPU, and RSS (the median of a reading a second over the run's second half, without the
mapped BPF maps: kernel memory either way); against the first revision: the ratios of CPU and
of RSS (geometric means of the rounds' ratios, 95 % t intervals on the log ratios).
`WORKTREE` is the checkout as it is now, uncommitted changes included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from runqscale import revtree
from runqscale.agent import bench
from runqscale.intervals import log_mean_ci
from runqscale.revtree import WORKTREE

MB = 1 << 20


def tree_at(rev: str, repo: str, work: str) -> str:
    """A PYTHONPATH entry under which `runqscale` is the code of `rev`, with its probe object
    built from its own sources."""
    from runqscale.probes.bench_at_rev import object_at

    src = revtree.checkout(rev, repo, work)
    if rev != WORKTREE:
        shutil.copy(object_at(rev, os.path.join(work, "obj")), os.path.join(src, "probes"))
    return revtree.layout(src, work, rev)


def split_spec(spec: str) -> tuple[str, list[str]]:
    """`REV` or `REV+FLAG[+FLAG...]`: a revision and the extra flags its agent runs with."""
    rev, *flags = spec.split("+")
    return rev, flags


def interpreter_flags(flags: list[str]) -> tuple[list[str], list[str] | None]:
    """The agent's flags and, from a `py:FLAGS` among them, the interpreter's (None: as the
    DaemonSet runs it). A `mod:` is neither (module_args)."""
    agent = [f for f in flags if not f.startswith(("py:", "mod:"))]
    py = [f[3:] for f in flags if f.startswith("py:")]
    return agent, ([w for w in ",".join(py).split(",") if w] if py else None)


def module_args(flags: list[str]) -> list[str] | None:
    """From a `mod:MODULE[,ARGS]` among the flags, what follows the interpreter's `-m` (None:
    the DaemonSet's module)."""
    mods = [f[4:] for f in flags if f.startswith("mod:")]
    if len(mods) > 1 or (mods and not mods[0].split(",")[0]):
        raise SystemExit("runqscale.agent.bench_at_rev: error: give one mod:MODULE[,ARGS], "
                         "e.g. mod:runqscale.cli,agent")
    return [w for w in mods[0].split(",") if w] if mods else None


def _one(path: str | None, flags: list[str], pods_flags: list[str], seconds: float,
         scrape_every: float) -> dict:
    agent_flags, py_flags = interpreter_flags(flags)
    saved = os.environ.get("PYTHONPATH")
    if path is not None:  # an image install holds its own copy (bench.AGENT_BIN)
        os.environ["PYTHONPATH"] = path  # the agent process inherits it
    try:
        a = bench.Agent(*pods_flags, *agent_flags, interpreter_flags=py_flags,
                        module=module_args(flags))
    finally:
        _restore("PYTHONPATH", saved)
    try:
        time.sleep(3)  # every container seen and labelled, the window filled
        a.scrape()
        cpu, scrapes, rss = bench.cpu_while_scraped(a, seconds, scrape_every)
    finally:
        a.stop()
    return {"cpu_core_fraction": cpu, "scrape_cpu_seconds": scrapes,
            "rss_bytes_without_bpf_maps": statistics.median(rss), "rss_samples": rss,
            "loadavg": os.getloadavg()[0]}


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def run(revs: list[str], paths: dict[str, str | None], n: int, rounds: int, seconds: float,
        scrape_every: float, pods_file: str) -> dict:
    runs: dict[str, list[dict]] = {r: [] for r in revs}
    cache = bench.evict_agent_files()  # as agent.bench: the RSS is not set by history
    with bench.live_cgroups(n, pods_file) as pods_flags:
        for r in range(rounds):
            for rev in revs if r % 2 == 0 else revs[::-1]:
                tree, flags = split_spec(rev)
                res = _one(paths[tree], flags, pods_flags, seconds, scrape_every)
                runs[rev].append(res)
                print(f"[round {r + 1}/{rounds}] {rev}: {res['cpu_core_fraction']:.3%} of a "
                      f"core, scrapes {[round(s * 1e3) for s in res['scrape_cpu_seconds']]}"
                      f" ms CPU, RSS {res['rss_bytes_without_bpf_maps'] / MB:.1f} MB, "
                      f"load {res['loadavg']:.2f}", flush=True)
    out: dict = {"kernel": os.uname().release, "cpus": os.cpu_count(), "cgroups": n,
                 "rounds": rounds, "seconds": seconds, "scrape_every_seconds": scrape_every,
                 "page_cache": {k: cache[k] for k in ("evicted_files", "dirs")},
                 "revisions": {}, "ratios": {}, "rss_ratios": {}}
    if any(x["cpu_core_fraction"] <= 0 for rs in runs.values() for x in rs):
        raise SystemExit("runqscale.agent.bench_at_rev: error: a run measured no CPU tick "
                         "(10 ms); give it more --seconds or --cgroups")
    for rev in revs:
        cpu = [x["cpu_core_fraction"] for x in runs[rev]]
        iv = log_mean_ci(cpu)
        rss = log_mean_ci([x["rss_bytes_without_bpf_maps"] for x in runs[rev]])
        scr = [s for x in runs[rev] for s in x["scrape_cpu_seconds"]]
        out["revisions"][rev] = {"cpu_core_fraction": cpu, "cpu_geomean": iv.value,
                                 "cpu_ci_low": iv.ci_low, "cpu_ci_high": iv.ci_high,
                                 "rss_bytes_geomean": rss.value, "rss_ci_low": rss.ci_low,
                                 "rss_ci_high": rss.ci_high,
                                 "scrape_cpu_seconds_median": statistics.median(scr),
                                 "runs": runs[rev]}
    first = runs[revs[0]]
    for rev in revs[1:]:  # b / a per round: geometric mean, 95 % t interval on the logs
        name = f"{rev}/{revs[0]}"
        for key, table in (("cpu_core_fraction", "ratios"),
                           ("rss_bytes_without_bpf_maps", "rss_ratios")):
            iv = log_mean_ci([y[key] / x[key] for x, y in zip(first, runs[rev], strict=True)])
            out[table][name] = {"ratio": iv.value, "ci_low": iv.ci_low,
                                "ci_high": iv.ci_high, "pairs": iv.n}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="+", help=f"git revisions, or {WORKTREE} for the checkout; "
                    "REV+FLAG runs that revision's agent with FLAG (e.g. WORKTREE+--gzip)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--cgroups", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--scrape-every", type=float, default=15.0)
    ap.add_argument("--out", default="bench-results/agent-at-rev.json")
    ap.add_argument("--install", choices=("here", "image"), default="here",
                    help="here: each revision's tree from this venv; image: the checkout as the "
                         f"image installs it (agent/bench_install.py; {WORKTREE} only), run as "
                         "the DaemonSet runs it unless a py:FLAGS says otherwise")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("runqscale.agent.bench_at_rev: error: needs root (BPF and cgroups)")
    if len(set(a.revs)) != len(a.revs) or a.rounds < 2:
        raise SystemExit("runqscale.agent.bench_at_rev: error: give distinct revisions and "
                         "--rounds 2 or more")
    repo = revtree.repo_root("runqscale.agent.bench_at_rev")
    trees = list(dict.fromkeys(split_spec(spec)[0] for spec in a.revs))
    if a.install == "image":
        if trees != [WORKTREE]:
            raise SystemExit("runqscale.agent.bench_at_rev: error: --install image measures the "
                             f"checkout: give {WORKTREE} (with +FLAGs) only")
        from runqscale.agent.bench_install import image_install

        bench.AGENT_BIN = image_install()
    elif any(interpreter_flags(split_spec(s)[1])[1] is not None or
             module_args(split_spec(s)[1]) is not None for s in a.revs):
        raise SystemExit("runqscale.agent.bench_at_rev: error: py:FLAGS and mod:MODULE need "
                         "--install image (the bytecode is compiled for the DaemonSet's flags)")
    with tempfile.TemporaryDirectory(prefix="runqscale-agent-at-rev-") as tmp:
        try:
            paths: dict[str, str | None] = (
                {WORKTREE: None} if a.install == "image"
                else {rev: tree_at(rev, repo, tmp) for rev in trees})
            res = run(a.revs, paths, a.cgroups, a.rounds, a.seconds, a.scrape_every,
                      os.path.join(tmp, "pods.json"))
        finally:  # the worktrees go with the directory; git forgets them too
            if a.install == "here":
                revtree.remove_worktrees(repo, tmp, trees)
    res["install"] = a.install
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\n{'revision':<12}{'CPU, % of a core (95 % CI)':>30}{'scrape CPU ms':>15}"
          f"{'RSS MB':>9}")
    for rev, v in res["revisions"].items():
        ci = f"{v['cpu_geomean']:.3%} [{v['cpu_ci_low']:.3%}, {v['cpu_ci_high']:.3%}]"
        print(f"{rev:<12}{ci:>30}{v['scrape_cpu_seconds_median'] * 1e3:>15.1f}"
              f"{v['rss_bytes_geomean'] / MB:>9.1f}")
    for what, table in (("CPU", "ratios"), ("RSS", "rss_ratios")):
        for name, r in res[table].items():
            print(f"{what} {name}: {r['ratio']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
                  f"({r['pairs']} paired rounds)")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
