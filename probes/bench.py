"""Probe cost benchmark (not a test): the same context-switch load measured with no probe, this
probe (core, and bcc when available), bcc's runqlat and libbpf-tools' runqlat.

For each tracer, in one run: ns per BPF program run and per context switch from bpf_stats
(kernel.bpf_stats_enabled on only for that measurement), and `stress-ng --switch` throughput
relative to no probe (stats off). Both are measured in every round, rounds interleaved so drift
on a shared machine hits every tracer alike; medians and ranges are reported, and the two goals'
ratios also paired within rounds (against no probe, and against bcc's runqlat): the geometric
mean of the rounds' ratios with its 95 % interval. Writes JSON and prints a table.

bpf_stats times each program run between two clock reads, and those reads cost more than a
small program does (an empty one reads ~50 ns on a VM). That cost is the measurement's, not
the tracer's (production nodes run with stats off), and it is charged once per program run, so
a tracer that runs two programs per switch pays it twice. An empty program on sched_switch
("empty-program") measures it in the same rounds; each tracer's ns per switch is also given net
of it (runs per switch x the empty program's ns per run): the work the tracer's code adds.

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

from runqscale.intervals import log_mean_ci

STRESS_SECONDS = 5


@dataclass(frozen=True)
class Tracer:
    name: str
    argv: list[str] | None  # None: no probe

    def available(self) -> bool:
        return self.argv is None or os.path.exists(self.argv[0]) or self.argv[0] == sys.executable


EMPTY = "empty-program"


def tracers() -> list[Tracer]:
    me = [sys.executable, "-m", "runqscale.agent.cli", "probe", "--json", "--interval", "1s"]
    return [
        Tracer("none", None),
        Tracer(EMPTY, [sys.executable, "-m", "runqscale.probes.bench", "--hold-empty-program"]),
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


def _own_progs(pid: int) -> set[int]:
    """Ids of the BPF programs whose fds this process holds (fdinfo's prog_id), so that other
    users' programs loaded meanwhile on a shared machine are never counted as the tracer's."""
    ids: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return ids
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except (OSError, ValueError):
            continue
    return ids


def _start(t: Tracer, timeout: float = 60.0) -> tuple[subprocess.Popen | None, set[int], float]:
    """Start a tracer and wait until its programs are attached; returns its program ids."""
    if t.argv is None:
        return None, set(), 0.0
    t0 = time.monotonic()
    p = subprocess.Popen(t.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last: set[int] = set()
    stable = 0
    attached = 0.0
    while time.monotonic() - t0 < timeout:
        new = _own_progs(p.pid)
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


def _cost(ids: set[int]) -> tuple[float | None, float | None]:
    """(ns per program run, ns per context switch) of these programs over one stress run, with
    bpf_stats on only for it."""
    try:
        _sysctl_stats(True)
        before, ctxt0 = _progs(), _context_switches()
        _switch_throughput()
        after, ctxt1 = _progs(), _context_switches()
    finally:
        _sysctl_stats(False)
    ns = sum(after[i].get("run_time_ns", 0) - before.get(i, {}).get("run_time_ns", 0)
             for i in ids if i in after)
    cnt = sum(after[i].get("run_cnt", 0) - before.get(i, {}).get("run_cnt", 0)
              for i in ids if i in after)
    return (ns / cnt if cnt else None), (ns / (ctxt1 - ctxt0) if ctxt1 > ctxt0 else None)


def hold_empty_program() -> None:
    """`r0 = 0; exit` as a raw tracepoint program on sched_switch, held until killed: what
    bpf_stats reads for a program that does nothing."""
    import ctypes
    import signal

    from runqscale.probes.libbpf import LibBpf

    lib = LibBpf.load()
    load, attach = lib.bpf_prog_load, lib.bpf_raw_tracepoint_open
    load.restype, attach.restype = ctypes.c_int, ctypes.c_int
    load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                     ctypes.c_size_t, ctypes.c_void_p]
    attach.argtypes = [ctypes.c_char_p, ctypes.c_int]
    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"), 16)
    raw_tracepoint = 17  # BPF_PROG_TYPE_RAW_TRACEPOINT
    fd = load(raw_tracepoint, b"rq_empty", b"GPL", insns, 2, None)
    if fd < 0:
        raise SystemExit(f"empty program refused: {os.strerror(-fd)}")
    link = attach(b"sched_switch", fd)
    if link < 0:
        raise SystemExit(f"cannot attach to sched_switch: {os.strerror(-link)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def throughput_loss(ops: list[float], base: float) -> dict:
    """Switch throughput lost against `base` (the no-probe median): median and range, in %."""
    return {"throughput_loss_pct": 100 * (1 - statistics.median(ops) / base),
            "throughput_loss_pct_range": [100 * (1 - max(ops) / base), 100 * (1 - min(ops) / base)]}


def paired_ratio(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """a / b within each round both ran: geometric mean and 95 % t interval of the ratios
    (None without a common round). Pairing takes out drift between rounds, which on this
    machine moves a tracer's throughput by more than the goal's width."""
    common = sorted(a.keys() & b.keys())
    ratios = [a[k] / b[k] for k in common if a[k] > 0 and b[k] > 0]
    if not ratios:
        return None
    iv = log_mean_ci(ratios)
    # a round with a zero (no switches counted) has no ratio: it is left out, and counted
    return {"ratio": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "pairs": iv.n,
            "rounds_dropped": len(common) - len(ratios)}


def add_paired(results: dict[str, dict], tput: dict[str, dict[int, float]],
               per_switch: dict[str, dict[int, float]]) -> None:
    """The paired fields of every tracer that has results: its throughput loss against the
    no-probe run of the same round, and its ns per switch against bcc runqlat's of the same
    round. Not for `none` itself (its rounds against themselves would claim a zero-width
    interval), for a tracer that failed, or against a bcc runqlat that failed."""
    ref_ok = "error" not in results.get("bcc-runqlat", {"error": "absent"})
    for name, r in results.items():
        if "error" in r or name == "none":
            continue
        r.update(paired_loss(tput.get(name, {}), tput.get("none", {})))
        vs_bcc = paired_ratio(per_switch.get(name, {}), per_switch.get("bcc-runqlat", {}))
        if ref_ok and vs_bcc and name != "bcc-runqlat":
            r["ns_per_switch_vs_bcc_runqlat_paired"] = vs_bcc


def paired_loss(ops: dict[int, float], none: dict[int, float]) -> dict:
    """Switch throughput lost against the no-probe run of the same round, in %: the geometric
    mean of the rounds' throughput ratios and its 95 % interval (upper end = the most lost)."""
    pr = paired_ratio(ops, none)
    if pr is None:
        return {}
    def pct(x: float | None) -> float | None:
        return None if x is None else 100 * (1 - x)
    return {"throughput_loss_pct_paired": pct(pr["ratio"]),
            "throughput_loss_pct_paired_ci": [pct(pr["ci_high"]), pct(pr["ci_low"])],
            "rounds_paired": pr["pairs"], "rounds_dropped": pr["rounds_dropped"]}


def _spread(values: list[float]) -> dict[str, float] | None:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} \
        if values else None


def run(rounds: int) -> dict:
    """Every round runs every tracer once, in the same order: a throughput run with bpf_stats
    off, then a cost run with it on. Ratios of medians over rounds, with ranges, and the goals'
    ratios paired within rounds (add_paired)."""
    chosen = [t for t in tracers() if t.available()]
    _sysctl_stats(False)
    # by round, so that ratios can be taken within a round (paired) as well as of medians
    tput: dict[str, dict[int, float]] = {t.name: {} for t in chosen}
    per_run: dict[str, dict[int, float]] = {t.name: {} for t in chosen}
    per_switch: dict[str, dict[int, float]] = {t.name: {} for t in chosen}
    startup: dict[str, float] = {}
    failed: dict[str, str] = {}
    for r in range(rounds):
        for t in chosen:
            if t.name in failed:
                continue
            print(f"[round {r + 1}/{rounds}] {t.name}: stress-ng --switch ...", flush=True)
            try:
                p, ids, start_s = _start(t)
            except RuntimeError as e:
                failed[t.name] = str(e)
                continue
            startup.setdefault(t.name, start_s)
            try:
                tput[t.name][r] = _switch_throughput()
                if p is not None:
                    ns_run, ns_switch = _cost(ids)
                    if ns_run is not None and ns_switch is not None:
                        per_run[t.name][r] = ns_run
                        per_switch[t.name][r] = ns_switch
            finally:
                _stop(p)
    base = statistics.median(tput["none"].values())
    results: dict[str, dict] = {}
    for t in chosen:
        if t.name in failed or not tput[t.name]:
            results[t.name] = {"error": failed.get(t.name, "no data")}
            continue
        ops = list(tput[t.name].values())
        sw = _spread(list(per_switch[t.name].values()))
        results[t.name] = {
            "switch_ops_per_s": ops,
            "throughput_vs_none": statistics.median(ops) / base,
            **throughput_loss(ops, base),
            "ns_per_bpf_run": (_spread(list(per_run[t.name].values())) or {}).get("median"),
            "ns_per_context_switch": sw["median"] if sw else None,
            "ns_per_context_switch_range": [sw["min"], sw["max"]] if sw else None,
            "start_to_attached_s": startup.get(t.name),
        }
    floor = results.get(EMPTY, {}).get("ns_per_bpf_run")
    for r in results.values():
        run_ns, switch_ns = r.get("ns_per_bpf_run"), r.get("ns_per_context_switch")
        if floor and run_ns and switch_ns:
            runs = switch_ns / run_ns  # program runs per context switch
            r["runs_per_context_switch"] = runs
            r["ns_per_context_switch_net"] = max(0.0, switch_ns - runs * floor)
    for r in results.values():
        # what the tracer adds to each switch with stats off, as a share of a bare switch: a
        # throughput loss L means each switch took 1 / (1 - L) as long
        loss = r.get("throughput_loss_pct")
        if loss is not None and loss < 100:
            r["added_time_per_switch_pct"] = 100 * (loss / 100) / (1 - loss / 100)
    ref = results.get("bcc-runqlat", {})
    for r in results.values():
        if ref.get("added_time_per_switch_pct", 0) > 0 and "added_time_per_switch_pct" in r:
            r["added_time_vs_bcc_runqlat"] = \
                r["added_time_per_switch_pct"] / ref["added_time_per_switch_pct"]
        if ref.get("ns_per_context_switch") and r.get("ns_per_context_switch"):
            r["ns_per_switch_vs_bcc_runqlat"] = \
                r["ns_per_context_switch"] / ref["ns_per_context_switch"]
        if ref.get("ns_per_context_switch_net") and r.get("ns_per_context_switch_net") is not None:
            r["ns_per_switch_net_vs_bcc_runqlat"] = \
                r["ns_per_context_switch_net"] / ref["ns_per_context_switch_net"]
    add_paired(results, tput, per_switch)
    return {"kernel": os.uname().release, "cpus": os.cpu_count(), "rounds": rounds,
            "stress": f"stress-ng --switch 2 -t {STRESS_SECONDS}",
            "stats_cost_ns_per_run": floor, "tracers": results}


def _with_ci(v: float | None, ci: list | None, spec: str, unit: str = "") -> str:
    if v is None:
        return "-"
    lo, hi = ci if ci else (None, None)
    band = f" [{lo:{spec}}, {hi:{spec}}]" if lo is not None and hi is not None else ""
    return f"{v:{spec}}{unit}{band}"


def _paired_text(p: dict | None) -> str:
    if not p or p.get("ratio") is None:
        return "-"
    return _with_ci(p["ratio"], [p["ci_low"], p["ci_high"]], ".3f", "x") + f" ({p['pairs']})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-results/probes.json")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hold-empty-program", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.hold_empty_program:
        hold_empty_program()
        return
    res = run(a.rounds)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\n{'tracer':<24}{'ns/run':>8}{'ns/switch':>11}{'(range)':>13}{'vs bcc':>8}"
          f"{'net':>6}{'vs bcc':>8}{'loss %':>8}{'(range)':>14}{'vs bcc':>8}{'start s':>9}")
    for name, r in res["tracers"].items():
        if "error" in r:
            print(f"{name:<24} error: {r['error'][:60]}")
            continue
        ns, sw = r.get("ns_per_bpf_run"), r.get("ns_per_context_switch")
        rel = r.get("ns_per_switch_vs_bcc_runqlat")
        swr, lr = r.get("ns_per_context_switch_range"), r["throughput_loss_pct_range"]
        net, nrel = r.get("ns_per_context_switch_net"), r.get("ns_per_switch_net_vs_bcc_runqlat")
        trel = r.get("added_time_vs_bcc_runqlat")
        print(f"{name:<24}{(f'{ns:.0f}' if ns else '-'):>8}{(f'{sw:.0f}' if sw else '-'):>11}"
              f"{(f'{swr[0]:.0f}-{swr[1]:.0f}' if swr else ''):>13}"
              f"{(f'{rel:.2f}x' if rel else '-'):>8}{(f'{net:.0f}' if net is not None else '-'):>6}"
              f"{(f'{nrel:.2f}x' if nrel is not None else '-'):>8}{r['throughput_loss_pct']:>8.1f}"
              f"{f'{lr[0]:.1f}..{lr[1]:.1f}':>14}"
              f"{(f'{trel:.2f}x' if trel is not None else '-'):>8}"
              f"{(r['start_to_attached_s'] or 0):>9.2f}")
    print("\npaired within rounds (geometric mean of the rounds' ratios [95 % interval]):")
    for name, r in res["tracers"].items():
        if "error" in r or name == "none":
            continue
        loss = _with_ci(r.get("throughput_loss_pct_paired"),
                        r.get("throughput_loss_pct_paired_ci"), ".1f", " %")
        vs_bcc = _paired_text(r.get("ns_per_switch_vs_bcc_runqlat_paired"))
        print(f"  {name:<22} throughput loss {loss:<24} ns/switch vs bcc runqlat {vs_bcc}")
    print("\nthe second 'vs bcc' after the loss: the time added to each switch with stats off,"
          " loss / (1 - loss), against bcc runqlat's")
    if res.get("stats_cost_ns_per_run"):
        print(f"\nnet: ns per switch minus runs per switch x {res['stats_cost_ns_per_run']:.0f} ns "
              "(what bpf_stats reads for an empty program: the measurement's own cost per run)")
    print(f"\nwritten to {a.out}")


if __name__ == "__main__":
    main()
