"""Where the probe's time per context switch goes (a benchmark, not a test).

Builds the fast path (runqlat.bpf.c) again with one part dropped at a time (its RQ_ABLATE_*
switches; the product is never built with them) and measures each build like probes/bench.py
does: ns per context switch from bpf_stats under `stress-ng --switch`, rounds interleaved with
the full program, bcc's runqlat and an empty program (what bpf_stats itself reads per run). A
part's cost is the full program's ns minus the build without it; "all three" drops the lot.
"hash-only" is the program as it was before stop 28 (every wait through the per-cgroup hash):
its negative "saves" is what the slotted histograms save per switch.

    python -m runqscale.probes.bench_breakdown --out bench-results/probe-breakdown.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources

from runqscale.probes import bench

# build name -> the parts it drops
BUILDS: dict[str, tuple[str, ...]] = {
    "full": (),
    "hash-only": ("SLOTS",),
    "no-holder-ring": ("HOLDERS",),
    "no-cgroup-lookup": ("HASH",),
    "no-task-storage": ("TASK_STORAGE",),
    "all-three-dropped": ("HOLDERS", "HASH", "TASK_STORAGE"),
}
WHAT = {"SLOTS": "slotted histograms (every wait through the per-cgroup hash, as before stop 28)",
        "HOLDERS": "who held the CPU (holder ring + holder_of)",
        "HASH": "per-cgroup histogram lookup (slot or hash): one histogram for all",
        "TASK_STORAGE": "task storage (waits split by migration, and the slot cache: without "
                        "it every wait looks its slot up)"}


def build(out_dir: str, parts: tuple[str, ...], src: str | None = None) -> str:
    """The object with `parts` dropped, named runqlat.bpf.o (libbpf names .rodata after it),
    from the package's source or the runqlat.bpf.c/.h/vmlinux.h in `src`."""
    src = src or str(resources.files("runqscale.probes"))
    os.makedirs(out_dir, exist_ok=True)
    obj = os.path.join(out_dir, "runqlat.bpf.o")
    argv = ["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I", str(src),
            "-I", "/usr/include/x86_64-linux-gnu", "-Wall", "-Werror",
            "-Wno-unused-function", *(f"-DRQ_ABLATE_{p}" for p in parts),
            "-c", os.path.join(src, "runqlat.bpf.c"), "-o", obj]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"clang failed for {parts or 'the full program'}: {r.stderr[-400:]}")
    return obj


def hold(path: str) -> None:
    """Load and attach the object at `path` as the product does, read it every second."""
    from runqscale.probes import core
    from runqscale.probes.cgroupfs import CgroupMounts

    core.object_path = lambda: path  # type: ignore[assignment]
    probe = core.CoreProbe(CgroupMounts.read().choose("auto")[0])
    while True:
        probe.read()
        time.sleep(1)


def holding(name: str, obj: str) -> bench.Tracer:
    """A tracer that loads the object at `obj` as the product does and holds it (hold())."""
    return bench.Tracer(name, [sys.executable, "-m", "runqscale.probes.bench_breakdown",
                               "--hold", obj])


def run(rounds: int, objs: dict[str, str]) -> dict:
    ref = [t for t in bench.tracers() if t.name in (bench.EMPTY, "bcc-runqlat") and t.available()]
    tracers = [*ref, *(holding(n, o) for n, o in objs.items())]
    ns: dict[str, list[float]] = {t.name: [] for t in tracers}
    for r in range(rounds):
        for t in tracers:
            print(f"[round {r + 1}/{rounds}] {t.name} ...", flush=True)
            p, ids, _ = bench._start(t)
            try:
                _run_ns, per_switch = bench._cost(ids)
            finally:
                bench._stop(p)
            if per_switch is not None:
                ns[t.name].append(per_switch)
    med = {n: statistics.median(v) for n, v in ns.items() if v}
    full, bcc = med.get("full"), med.get("bcc-runqlat")
    builds = {n: {"ns_per_context_switch": med.get(n), "range": [min(ns[n]), max(ns[n])],
                  "dropped": [WHAT[p] for p in BUILDS[n]],
                  "saves_ns": (full - med[n]) if full and n in med else None,
                  "vs_bcc_runqlat": (med[n] / bcc) if bcc and n in med else None}
              for n in objs}
    return {"kernel": os.uname().release, "rounds": rounds, "stress": bench.STRESS_SECONDS,
            "stats_cost_ns_per_run": med.get(bench.EMPTY),
            "bcc_runqlat_ns_per_context_switch": bcc, "builds": builds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-results/probe-breakdown.json")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hold", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.hold:
        hold(a.hold)
        return
    with tempfile.TemporaryDirectory(prefix="runqscale-ablate-") as tmp:
        objs = {n: build(os.path.join(tmp, n), parts) for n, parts in BUILDS.items()}
        res = run(a.rounds, objs)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\nbpf_stats' own cost: {res['stats_cost_ns_per_run'] or 0:.1f} ns per program run; "
          f"bcc runqlat: {res['bcc_runqlat_ns_per_context_switch'] or 0:.0f} ns per switch")
    print(f"{'build':<20}{'ns/switch':>10}{'(range)':>14}{'saves':>8}{'vs bcc':>8}")
    for n, b in res["builds"].items():
        lo, hi = b["range"]
        saves = b["saves_ns"]
        rel = b["vs_bcc_runqlat"]
        print(f"{n:<20}{b['ns_per_context_switch']:>10.1f}{f'{lo:.1f}-{hi:.1f}':>14}"
              f"{(f'{saves:.1f}' if saves is not None else '-'):>8}"
              f"{(f'{rel:.3f}x' if rel is not None else '-'):>8}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
