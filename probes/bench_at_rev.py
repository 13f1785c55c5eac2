"""The probe as it was at git revisions, against each other in one run (a benchmark, not a test).

Builds runqlat.bpf.c (with its runqlat.h) at each revision, loads each object with today's
loader, and measures, in interleaved rounds (the order reversed every other round): switch
throughput under `stress-ng --switch` with bpf_stats off, against no probe at all, and BPF ns
per context switch with it on. Tells a program change from the machine's drift, which moves the
throughput loss by more than the goal's width between days: every revision after the first is
also paired with the first within rounds (ns per switch as a ratio, with a 95 % interval).

    python -m runqscale.probes.bench_at_rev fe8096d HEAD --rounds 8 --out bench-results/at-rev.json

Revisions older than the loader's maps (before stop 28's slots) fail to load, with the map names.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from importlib import resources

from runqscale.probes import bench
from runqscale.probes.bench_breakdown import build, holding

SOURCES = ("probes/runqlat.bpf.c", "probes/runqlat.h")


def object_at(rev: str, work: str) -> str:
    """The probe object built from `rev`'s sources (vmlinux.h: today's, it is generated)."""
    src = os.path.join(work, rev.replace("/", "_"))
    os.makedirs(src, exist_ok=True)
    here = str(resources.files("runqscale.probes"))
    for path in SOURCES:
        out = subprocess.run(["git", "-C", here, "show", f"{rev}:{path}"], capture_output=True,
                             text=True)
        if out.returncode != 0:
            raise SystemExit(f"revision {rev}: cannot read {path}: {out.stderr.strip()[-200:]}")
        with open(os.path.join(src, os.path.basename(path)), "w") as f:
            f.write(out.stdout)
    shutil.copy(os.path.join(here, "vmlinux.h"), src)
    return build(os.path.join(src, "obj"), (), src)


def run(rounds: int, objs: dict[str, str]) -> dict:
    """Every revision's throughput loss and ns per switch; each one after the first also paired
    with the first within rounds (the ratio of the two in the same round, geometric mean and
    95 % interval), which takes out the drift between rounds."""
    tracers = [bench.Tracer("none", None), *(holding(n, o) for n, o in objs.items())]
    tput: dict[str, dict[int, float]] = {t.name: {} for t in tracers}
    ns: dict[str, dict[int, float]] = {t.name: {} for t in tracers}
    bench._sysctl_stats(False)
    for r in range(rounds):
        for t in tracers if r % 2 == 0 else tracers[::-1]:
            print(f"[round {r + 1}/{rounds}] {t.name} ...", flush=True)
            p, ids, _ = bench._start(t)
            try:
                tput[t.name][r] = bench._switch_throughput()
                if p is not None and (per_switch := bench._cost(ids)[1]) is not None:
                    ns[t.name][r] = per_switch
            finally:
                bench._stop(p)
    base = statistics.median(tput["none"].values())
    first = next(iter(objs))
    out: dict[str, dict] = {}
    for n in objs:
        out[n] = {**bench.throughput_loss(list(tput[n].values()), base),
                  **bench.paired_loss(tput[n], tput["none"]),
                  "ns_per_context_switch": statistics.median(ns[n].values()) if ns[n] else None,
                  "ns_per_context_switch_rounds": [ns[n].get(r) for r in range(rounds)]}
        if n != first:
            out[n][f"ns_per_switch_vs_{first}_paired"] = bench.paired_ratio(ns[n], ns[first])
    return {"kernel": os.uname().release, "rounds": rounds, "stress": bench.STRESS_SECONDS,
            "switch_ops_per_s": {k: [v[r] for r in sorted(v)] for k, v in tput.items()},
            "baseline": first, "revisions": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="+", help="git revisions (HEAD, a tag, a commit)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default="bench-results/probe-at-rev.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="runqscale-at-rev-") as tmp:
        objs = {rev: object_at(rev, tmp) for rev in a.revs}
        try:
            res = run(a.rounds, objs)
        except RuntimeError as e:  # an object today's loader refuses: say which and why
            raise SystemExit(f"cannot measure: {e}") from None
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\n{'revision':<14}{'loss %':>8}{'(range)':>16}{'ns/switch':>11}"
          f"  ns/switch vs {res['baseline']}, paired (95 % CI)")
    for n, v in res["revisions"].items():
        lo, hi = v["throughput_loss_pct_range"]
        nsw = v["ns_per_context_switch"]
        pr = v.get(f"ns_per_switch_vs_{res['baseline']}_paired")
        vs = f"{pr['ratio']:.3f} [{pr['ci_low']:.3f}, {pr['ci_high']:.3f}] ({pr['pairs']} rounds)" \
            if pr else "-"
        print(f"{n:<14}{v['throughput_loss_pct']:>8.1f}{f'{lo:.1f}..{hi:.1f}':>16}"
              f"{(f'{nsw:.1f}' if nsw is not None else '-'):>11}  {vs}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
