"""`runqscale scaler --signals FILE --log LOG` resumes from its log (issue 10), in process.

The kill -9 test (test_reliability_kill.py) shows it end to end; these pin the rules: decisions a
log already holds for the same policy are not logged again (per workload, by ts), other policies'
records do not count, `--no-resume` re-decides everything, a torn last line is decided again, and
a corrupt log is bad input naming the line.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner

from runqscale.agent.cli import main as root
from runqscale.scaler import log

WORKLOADS = ("default/web", "shop/cart")


def _signals(tmp_path: Path, n: int = 60) -> Path:
    rng = random.Random(3)
    p = tmp_path / "signals.jsonl"
    p.write_text("".join(
        json.dumps({"ts": 1000.0 + 3 * i, "workload": w, "replicas": 2, "ready_replicas": 2,
                    "cpu_usage_cores": rng.uniform(0.2, 1.5), "cpu_request_cores": 0.5,
                    "cpu_limit_cores": 1.0, "runq_p95_seconds": rng.uniform(0.001, 0.02),
                    "throttled_ratio": 0.0}) + "\n"
        for i in range(n) for w in WORKLOADS))
    return p


def _run(*args: str):
    return CliRunner().invoke(root, ["scaler", *args], catch_exceptions=False)


def _keys(p: Path) -> list[tuple[float, str, str]]:
    return [(r.ts, r.workload.key, r.policy) for r in log.read(p).recommendations]


def test_rerun_logs_nothing_twice_and_no_resume_does(tmp_path):
    sig, out = _signals(tmp_path), tmp_path / "recs.jsonl"
    assert _run("--signals", str(sig), "--log", str(out)).exit_code == 0
    first = out.read_bytes()
    res = _run("--signals", str(sig), "--log", str(out))
    assert res.exit_code == 0 and res.stdout == "" and out.read_bytes() == first
    assert _run("--signals", str(sig), "--once", "--log", str(out)).exit_code == 0
    assert out.read_bytes() == first  # --once on the last sample: already logged
    assert _run("--signals", str(sig), "--log", str(out), "--no-resume").exit_code == 0
    assert out.read_bytes() == first + first


def test_resume_continues_exactly_where_the_log_stops(tmp_path):
    sig, ref, out = _signals(tmp_path), tmp_path / "ref.jsonl", tmp_path / "recs.jsonl"
    assert _run("--signals", str(sig), "--log", str(ref)).exit_code == 0
    lines = ref.read_bytes().splitlines(keepends=True)
    # a run killed after 17 lines, the 18th torn (power loss before fsync)
    out.write_bytes(b"".join(lines[:17]) + lines[17][: len(lines[17]) // 2])
    assert _run("--signals", str(sig), "--log", str(out)).exit_code == 0
    res = log.read(out)
    assert res.skipped_torn_lines == 1 and not res.torn_last_line
    assert _keys(out) == _keys(ref)


def test_other_policies_records_do_not_count(tmp_path):
    sig, out = _signals(tmp_path), tmp_path / "recs.jsonl"
    assert _run("--policy", "hpa", "--signals", str(sig), "--log", str(out)).exit_code == 0
    n_hpa = len(_keys(out))
    assert _run("--policy", "showar", "--signals", str(sig), "--log", str(out)).exit_code == 0
    showar = [k for k in _keys(out) if k[2] == "showar"]
    assert len(_keys(out)) == n_hpa + len(showar) and len(showar) > n_hpa


def test_torn_line_cut_after_a_nested_object_is_torn_not_corrupt(tmp_path):
    sig, out = _signals(tmp_path, 5), tmp_path / "recs.jsonl"
    assert _run("--signals", str(sig), "--log", str(out)).exit_code == 0
    data = out.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = data.index(b"}", data.index(b'"workload"', last)) + 1  # right after {...}
    out.write_bytes(data[:cut])
    assert log.read(out).torn_last_line
    out.write_bytes(data[:cut] + b"\n" + data[last:])  # ended by a later append
    assert log.read(out).skipped_torn_lines == 1


def test_corrupt_log_is_one_line_exit_2(tmp_path):
    sig, out = _signals(tmp_path, 5), tmp_path / "recs.jsonl"
    out.write_text('{"not": "a recommendation"}\n')
    res = _run("--signals", str(sig), "--log", str(out))
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert "\n" not in err and f"--log {out}:1:" in err and "new --log file" in err
