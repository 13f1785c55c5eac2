"""kill -9 of the scaler mid-write (issue 10).

`runqscale scaler --signals FILE --log LOG` (a long signals file, no --once) runs in a subprocess
and is SIGKILLed at random moments, KILLS times, restarted each time, then left to finish. After
every kill the log must parse (`log.read`: a torn last line is tolerated, a torn line a later
append ended is skipped). A SIGKILL cannot tear a line (one write() per batch completes before
the signal is delivered), so some rounds also cut the log inside its last line, as a power loss
before fsync would, to exercise the reader and the writer's repair of a torn line.

The scaler resumes: at start-up it reads the log's newest ts per workload, replays the samples up
to it silently (rebuilding the policies' state) and appends only later decisions. So nothing is
lost or logged twice: the final log, torn lines aside, is byte for byte an uncrashed run's log, and
what each killed run appended is a contiguous piece of it. The figures (kills, torn lines, lost,
duplicated, restart-to-first-decision) are printed with -s and summarised in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from runqscale.scaler import log

KILLS = int(os.environ.get("RUNQSCALE_KILLS", "10"))
SAMPLES = 4000  # seconds of signals per workload; an uncrashed run takes a few seconds
WORKLOADS = ("default/web", "default/api", "shop/cart")


def _write_signals(path: Path) -> None:
    rng = random.Random(7)
    with path.open("w") as f:
        for i in range(SAMPLES):
            for w in WORKLOADS:
                f.write(json.dumps({
                    "ts": 1_750_000_000 + i, "workload": w, "replicas": 2, "ready_replicas": 2,
                    "cpu_usage_cores": rng.uniform(0.2, 2.0), "cpu_request_cores": 0.5,
                    "cpu_limit_cores": 1.0, "runq_p95_seconds": rng.uniform(0.001, 0.03),
                    "throttled_ratio": rng.uniform(0.0, 0.3), "request_rate": 10.0}) + "\n")


def _cmd(signals_path: Path, log_path: Path) -> list[str]:
    return [sys.executable, "-m", "runqscale.agent.cli", "scaler", "--signals",
            str(signals_path), "--log", str(log_path)]


def _keys(path: Path) -> Counter:
    res = log.read(path)
    return Counter((r.ts, r.workload.key, r.action) for r in res.recommendations)


def _wait_growth(path: Path, size: int, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and path.stat().st_size > size:
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


def _good_lines(path: Path) -> bytes:
    """The log without the torn lines the reader skips (cut ones, ended by a later append)."""
    return b"".join(ln + b"\n" for ln in path.read_bytes().split(b"\n") if _parses(ln))


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def test_sigkill_mid_write_log_always_parses_nothing_lost_nothing_repeated(tmp_path):
    sig = tmp_path / "signals.jsonl"
    _write_signals(sig)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    # reference: an uncrashed run
    ref_log = tmp_path / "ref.jsonl"
    t0 = time.monotonic()
    r = subprocess.run(_cmd(sig, ref_log), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, env=env, timeout=300)
    full_run = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    ref = _keys(ref_log)
    ref_bytes = ref_log.read_bytes()
    assert sum(ref.values()) > 500

    rng = random.Random(int(os.environ.get("RUNQSCALE_KILL_SEED", "1")))
    out = tmp_path / "recs.jsonl"
    written_before_kills = 0
    torn_cut = 0
    first_decision: list[float] = []
    for k in range(KILLS):
        size = out.stat().st_size if out.exists() else 0
        p = subprocess.Popen(_cmd(sig, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=env)
        # restart -> first decision appended (start-up + parse + silent replay + first batch)
        dt = _wait_growth(out, size, timeout=60)
        assert dt is not None, "restarted scaler wrote nothing in 60 s"
        first_decision.append(dt)
        # then a random moment while it appends; each run resumes where the last stopped, so
        # the kills share the run's length (they must not let it reach the end)
        time.sleep(rng.uniform(0.0, full_run / (KILLS + 2)))
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        assert p.returncode == -signal.SIGKILL, f"run {k} ended before the kill; shorten sleeps"
        p.stderr.close()  # type: ignore[union-attr]
        res = log.read(out)  # must parse after every kill
        this_run = out.read_bytes()[size:]
        # what a killed run appended (after any repair newline) continues the log exactly as
        # the uncrashed run did
        body = this_run.lstrip(b"\n")
        assert ref_bytes.startswith(_good_lines(out)), f"run {k}: log differs from reference"
        assert body in ref_bytes, f"run {k}: killed run's lines differ from reference"
        written_before_kills += body.count(b"\n")
        if k % 3 == 1 and body.count(b"\n") >= 1:
            # a power-loss-style torn last line: cut inside the last line
            data = out.read_bytes()
            last_start = data.rstrip(b"\n").rfind(b"\n") + 1
            cut = rng.randint(last_start + 1, len(data) - 2)
            with out.open("r+b") as f:
                f.truncate(cut)
            torn_cut += 1
            written_before_kills -= 1
            res = log.read(out)
            assert res.torn_last_line
        assert isinstance(res.recommendations, list)

    # last restart runs to the end
    r = subprocess.run(_cmd(sig, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    res = log.read(out)
    assert not res.torn_last_line
    assert res.skipped_torn_lines == torn_cut  # every cut line was ended and skipped, none else
    got = _keys(out)
    lost = sum((ref - got).values())
    duplicated = sum((got - ref).values())
    print(f"\nkill-9 figures: kills={KILLS} torn_lines_cut={torn_cut} "
          f"reference_decisions={sum(ref.values())} final_log_decisions={sum(got.values())} "
          f"lost={lost} duplicated={duplicated} written_before_kills={written_before_kills} "
          f"uncrashed_run_s={full_run:.2f} "
          f"restart_to_first_decision_s min={min(first_decision):.3f} "
          f"median={sorted(first_decision)[len(first_decision) // 2]:.3f} "
          f"max={max(first_decision):.3f}")
    assert lost == 0
    assert duplicated == 0
    assert _good_lines(out) == ref_bytes  # same decisions, same order, same bytes
