"""`make bench-validate`: every policy's knob swept on each workload, Pareto plots, comparisons.

Per workload (the WC98 day-25 per-minute trace, the 1998-06-25 per-second trace, and the
emulated DeathStarBench social network on day 25), `runqscale validate` runs once per setting:

- `default`: showar, hpa, vpa, phpa-knn at the library's targets, in ABBA pairs: the
  `comparisons` (showar against each baseline and the best of them) come from this report;
- `showar-k<k>`: showar alone at each other margin (limit = demand + k sigma; the knob that
  moves its cost: its contention target is stretched to one request's CPU time anyway), and
  `showar-<ms>` at each run-queue p95 target given with `--showar-targets`;
- `hpa-<pct>`: hpa and phpa-knn (ABBA) at each CPU utilisation target.

Then `pareto.png`/`pareto.json` per workload (allocated core-seconds vs p99, one point per
policy x knob, 95 % intervals), and `summary.json` with every workload's default comparisons
(every workload under OUT, so sweeps run one `--only` at a time add up; `settings` lists each
workload's setting directories).
The `default` setting measures the capacity (CPU per request, open loop); every other setting
of that workload replays the same load (`--capacity` from the default's report), so the points
of a Pareto plot differ only in the policy and its knob. Every setting writes its own
directory (`OUT/<workload>/<setting>/report.json`), and a setting whose report already has all
its runs is not run again, so an interrupted sweep resumes.

    python -m runqscale.validation.bench --out out/bench-validate [--duration 150s]
        [--repeats 3] [--day25 FILE] [--per-second FILE] [--graph FILE] [--only day25]
        [--policies showar,hpa] [--showar-margins 1,3] [--cpu-targets 0.5,0.9]
        [--cpu-policies hpa] [--extra "--segment 19h,90m"]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from runqscale import data, termination
from runqscale.scaler.model import ScalerConfig
from runqscale.scaler.policies.showar_sizing import SizingParams
from runqscale.validation import pareto
from runqscale.validation.report import write_json

SHOWAR_MARGINS = (1.0, 2.0, 3.0)  # 2: the library's (in the default setting)
CPU_TARGETS = (0.5, 0.7, 0.9)
DEFAULT_POLICIES = ("showar", "hpa", "vpa", "phpa-knn")
CPU_POLICIES = ("hpa", "phpa-knn")
WORKLOADS = ("day25", "per-second", "deathstarbench")


@dataclass(frozen=True)
class Setting:
    name: str
    policies: tuple[str, ...]
    args: tuple[str, ...]


def settings(margins: tuple[float, ...] = SHOWAR_MARGINS,
             cpu: tuple[float, ...] = CPU_TARGETS,
             policies: tuple[str, ...] = DEFAULT_POLICIES,
             cpu_policies: tuple[str, ...] = CPU_POLICIES,
             showar_ms: tuple[float, ...] = ()) -> list[Setting]:
    """The default comparison, then each policy's knob (the library's defaults are not run
    twice: its margin and target are in the default setting)."""
    lib = ScalerConfig()
    out = [Setting("default", policies, ())]
    out += [Setting(f"showar-k{k:g}", ("showar",), ("--showar-margin", f"{k:g}"))
            for k in margins if k != SizingParams.sigma_k]
    out += [Setting(f"showar-{ms:g}ms", ("showar",), ("--target-runq-p95", f"{ms:g}ms"))
            for ms in showar_ms if ms != lib.target_runq_p95_seconds * 1e3]
    out += [Setting(f"hpa-{u:.0%}".replace("%", "pct"), cpu_policies,
                    ("--target-cpu", f"{u:g}")) for u in cpu]
    return out


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers, e.g. 1,3") \
            from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def workloads(a: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    return {"day25": ("--trace", a.day25),
            "per-second": ("--trace", a.per_second),
            "deathstarbench": ("--app", "deathstarbench", "--trace", a.day25, "--graph",
                               a.graph, "--affinity-seconds", "0")}


def complete(report_path: str, policies: tuple[str, ...], repeats: int) -> bool:
    try:
        with open(report_path) as f:
            runs = json.load(f)["runs"]
    except (OSError, ValueError, KeyError):
        return False
    return len(runs) >= len(policies) * repeats


def _capacity_of(default_dir: str) -> tuple[str, ...]:
    """`--capacity X` from the default setting's measurement (nothing if it has none)."""
    try:
        with open(os.path.join(default_dir, "report.json")) as f:
            cap = json.load(f)["load"]["capacity_rps"]
    except (OSError, ValueError, KeyError):
        return ()
    return ("--capacity", f"{cap:.6g}")


def reports_in(workload_dir: str) -> dict[str, dict]:
    """Every setting's report under one workload's directory, by setting name (unreadable or
    missing reports are left out: a setting still running has none yet)."""
    out: dict[str, dict] = {}
    try:
        names = sorted(os.listdir(workload_dir))
    except OSError:
        return out
    for name in names:
        try:
            with open(os.path.join(workload_dir, name, "report.json")) as f:
                out[name] = json.load(f)
        except (OSError, ValueError):
            continue
    return out


def summarize(out_dir: str, names: tuple[str, ...]) -> dict[str, dict]:
    """summary.json: each workload's default comparisons, for every workload with reports on
    disk, not only the last invocation's (a sweep run one workload at a time with --only into
    one --out keeps every workload's summary)."""
    summary: dict[str, dict] = {}
    for w in names:
        by_name = reports_in(os.path.join(out_dir, w))
        if not by_name:
            continue
        default = by_name.get("default") or {}
        summary[w] = {"comparisons": default.get("comparisons", []),
                      "exclusions": sum(len(r.get("exclusions", [])) for r in by_name.values()),
                      "settings": sorted(by_name),
                      "trace": default.get("trace")}
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runqscale.validation.bench",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/bench-validate")
    ap.add_argument("--duration", default="150s")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--day25", default=str(data.WC98_DAY25))
    ap.add_argument("--per-second", default=str(data.WC98_PER_SECOND))
    ap.add_argument("--graph", default=str(data.REED98))
    ap.add_argument("--only", action="append", choices=WORKLOADS,
                    help="Run only these workloads (repeatable).")
    ap.add_argument("--extra", default="", help="More `runqscale validate` options, one string.")
    ap.add_argument("--policies", type=_names, default=DEFAULT_POLICIES,
                    help="The default setting's policies (comma-separated).")
    ap.add_argument("--showar-margins", type=_floats, default=SHOWAR_MARGINS,
                    help="showar's margins k (sigmas) to sweep, e.g. 1,2,3.")
    ap.add_argument("--showar-targets", type=_floats, default=(),
                    help="showar's run-queue p95 targets (ms) to sweep too, e.g. 2,10,20.")
    ap.add_argument("--cpu-targets", type=_floats, default=CPU_TARGETS,
                    help="The HPA family's CPU utilisation targets, e.g. 0.5,0.7,0.9.")
    ap.add_argument("--cpu-policies", type=_names, default=CPU_POLICIES,
                    help="The HPA-family policies swept over --cpu-targets.")
    a = ap.parse_args(argv)
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    wls = {k: v for k, v in workloads(a).items() if not a.only or k in a.only}
    sweep = settings(a.showar_margins, a.cpu_targets, a.policies, a.cpu_policies,
                     a.showar_targets)
    plan = [(w, s) for w in wls for s in sweep]
    started = time.monotonic()
    for i, (w, s) in enumerate(plan, start=1):
        d = os.path.join(a.out, w, s.name)
        rp = os.path.join(d, "report.json")
        elapsed = (time.monotonic() - started) / 60
        if complete(rp, s.policies, a.repeats):
            print(f"[{i}/{len(plan)}] {w} {s.name}: done already ({rp})", flush=True)
            continue
        print(f"[{i}/{len(plan)}] {w} {s.name}: {','.join(s.policies)} x {a.repeats} "
              f"({elapsed:.0f} min so far)", flush=True)
        cap = () if s.name == "default" else _capacity_of(os.path.join(a.out, w, "default"))
        cmd = [sys.executable, "-m", "runqscale.agent.cli", "validate", *wls[w],
               "--policies", ",".join(s.policies), "--duration", a.duration,
               "--repeats", str(a.repeats), "--out", d, *cap, *s.args, *a.extra.split()]
        rc = termination.call(cmd)  # a stopped sweep lets the run in progress clean up
        if rc != 0:
            print(f"  {w} {s.name} failed (exit {rc}): {' '.join(cmd)}", flush=True)
            if rc == 2:
                return 2
    names = {s.name for s in sweep}
    for w in wls:  # this invocation's workloads and settings only: one duration per plot
        reports = [r for n, r in reports_in(os.path.join(a.out, w)).items() if n in names]
        if not reports:
            continue
        pts = pareto.points(reports)
        write_json(os.path.join(a.out, w, "pareto.json"), {"points": pts})
        pareto.plot(os.path.join(a.out, w, "pareto.png"), pts, f"{w}: cost vs p99 per policy "
                    f"and knob ({a.duration} runs, {a.repeats} repeats)")
        print(f"{w}: wrote {a.out}/{w}/pareto.png and pareto.json", flush=True)
    summary = summarize(a.out, WORKLOADS)
    write_json(os.path.join(a.out, "summary.json"), summary)
    print(f"wrote {a.out}/summary.json", flush=True)
    return 0


if __name__ == "__main__":
    termination.terminate_as_interrupt()  # a stopped sweep stops its run in progress cleanly
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        code, what = termination.stopped(e)
        print(f"python -m runqscale.validation.bench: {what}", file=sys.stderr)
        sys.exit(code)
