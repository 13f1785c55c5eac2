"""Probe cost benchmark (not a test): the same context-switch load measured with no probe, this
probe (core, and bcc when available), bcc's runqlat and libbpf-tools' runqlat.

For each tracer, in one run: ns per BPF program run from bpf_stats (kernel.bpf_stats_enabled on
only for that measurement), and `stress-ng --switch` throughput relative to no probe (stats off).
Rounds are interleaved so drift hits every tracer alike. Writes JSON and prints a table.

    python -m runqscale.probes.bench --out bench-results/probes.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

STRESS_SECONDS = 5


@dataclass(frozen=True)
class Tracer:
    name: str
    argv: list[str] | None  # None: no probe

    def available(self) -> bool:
        return self.argv is None or os.path.exists(self.argv[0]) or self.argv[0] == sys.executable


def tracers() -> list[Tracer]:
    me = [sys.executable, "-m", "runqscale.agent.cli", "probe", "--json", "--interval", "1s"]
    return [
        Tracer("none", None),
        Tracer("runqscale-core", [*me, "--backend", "core"]),
        Tracer("runqscale-bcc", [*me, "--backend", "bcc"]),
        Tracer("bcc-runqlat", ["/usr/sbin/runqlat-bpfcc", "1"]),
        Tracer("libbpf-tools-runqlat", ["/usr/sbin/runqlat", "1"]),
    ]


def _progs() -> dict[int, dict]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True)
    return {p["id"]: p for p in json.loads(out.stdout or "[]")}


def _sysctl_stats(on: bool) -> None:
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1" if on else "0")


def _start(t: Tracer, baseline: set[int], timeout: float = 60.0) -> tuple[subprocess.Popen | None,
                                                                         set[int], float]:
    """Start a tracer and wait until its programs are attached; returns its program ids."""
    if t.argv is None:
        return None, set(), 0.0
    t0 = time.monotonic()
    p = subprocess.Popen(t.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last: set[int] = set()
    stable = 0
    while time.monotonic() - t0 < timeout:
        new = {i for i, pr in _progs().items() if i not in baseline and pr.get("type") in
               ("tracing", "tracepoint", "raw_tracepoint")}
        stable = stable + 1 if new and new == last else 0
        if new and not last:
            attached = time.monotonic() - t0  # first program loaded: the tracer is live
        if stable >= 3:  # the same programs for three polls: every attach is done
            return p, new, attached
        last = new
        if p.poll() is not None:
            raise RuntimeError(f"{t.name} exited: {p.stderr.read().strip()[-300:]}")
        time.sleep(0.1)
    p.kill()
    raise RuntimeError(f"{t.name}: no programs attached within {timeout:.0f} s")


def _stop(p: subprocess.Popen | None) -> None:
    if p is not None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def _context_switches() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("ctxt "):
                return int(line.split()[1])
    return 0


def _switch_throughput() -> float:
    out = subprocess.run(["stress-ng", "--switch", "2", "-t", str(STRESS_SECONDS),
                          "--metrics-brief"], capture_output=True, text=True).stderr
    m = re.search(r"switch\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"cannot parse stress-ng output: {out[-300:]}")
    return float(m.group(1))


def run(rounds: int) -> dict:
    chosen = [t for t in tracers() if t.available()]
    _sysctl_stats(False)
    tput: dict[str, list[float]] = {t.name: [] for t in chosen}
    ns_per_run: dict[str, float | None] = {}
    ns_per_switch: dict[str, float | None] = {}  # all of a tracer's BPF time / context switches
    startup: dict[str, float] = {}
    failed: dict[str, str] = {}
    for r in range(rounds):
        for t in chosen:
            if t.name in failed:
                continue
            print(f"[round {r + 1}/{rounds}] {t.name}: stress-ng --switch ...", flush=True)
            try:
                p, _, start_s = _start(t, set(_progs()))
            except RuntimeError as e:
                failed[t.name] = str(e)
                continue
            startup.setdefault(t.name, start_s)
            try:
                tput[t.name].append(_switch_throughput())
            finally:
                _stop(p)
    for t in chosen:
        if t.argv is None or t.name in failed:
            continue
        print(f"[bpf_stats] {t.name} ...", flush=True)
        p, ids, _ = _start(t, set(_progs()))
        try:
            _sysctl_stats(True)
            before, ctxt0 = _progs(), _context_switches()
            _switch_throughput()
            after, ctxt1 = _progs(), _context_switches()
        finally:
            _sysctl_stats(False)
            _stop(p)
        ns = sum(after[i].get("run_time_ns", 0) - before.get(i, {}).get("run_time_ns", 0)
                 for i in ids if i in after)
        cnt = sum(after[i].get("run_cnt", 0) - before.get(i, {}).get("run_cnt", 0)
                  for i in ids if i in after)
        ns_per_run[t.name] = ns / cnt if cnt else None
        ns_per_switch[t.name] = ns / (ctxt1 - ctxt0) if ctxt1 > ctxt0 else None
    base = statistics.median(tput["none"])
    results = {}
    for t in chosen:
        if t.name in failed or not tput[t.name]:
            results[t.name] = {"error": failed.get(t.name, "no data")}
            continue
        med = statistics.median(tput[t.name])
        results[t.name] = {
            "switch_ops_per_s": tput[t.name],
            "throughput_vs_none": med / base,
            "throughput_loss_pct": 100 * (1 - med / base),
            "ns_per_bpf_run": ns_per_run.get(t.name),
            "ns_per_context_switch": ns_per_switch.get(t.name),
            "start_to_attached_s": startup.get(t.name),
        }
    ref = results.get("bcc-runqlat", {}).get("ns_per_context_switch")
    for r in results.values():
        if ref and r.get("ns_per_context_switch"):
            r["ns_per_switch_vs_bcc_runqlat"] = r["ns_per_context_switch"] / ref
    return {"kernel": os.uname().release, "cpus": os.cpu_count(), "rounds": rounds,
            "stress": f"stress-ng --switch 2 -t {STRESS_SECONDS}", "tracers": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-results/probes.json")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    res = run(a.rounds)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\n{'tracer':<24}{'ns/run':>8}{'ns/switch':>11}{'vs bcc':>8}{'loss %':>8}"
          f"{'start s':>9}")
    for name, r in res["tracers"].items():
        if "error" in r:
            print(f"{name:<24} error: {r['error'][:60]}")
            continue
        ns, sw = r.get("ns_per_bpf_run"), r.get("ns_per_context_switch")
        rel = r.get("ns_per_switch_vs_bcc_runqlat")
        print(f"{name:<24}{(f'{ns:.0f}' if ns else '-'):>8}{(f'{sw:.0f}' if sw else '-'):>11}"
              f"{(f'{rel:.2f}x' if rel else '-'):>8}{r['throughput_loss_pct']:>8.1f}"
              f"{(r['start_to_attached_s'] or 0):>9.2f}")
    print(f"\nwritten to {a.out}")


if __name__ == "__main__":
    main()
