"""The recommendations log, the signals file and Prometheus answers, the CLI and the report."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from runqscale.agent.cli import main as root
from runqscale.scaler import log, prometheus_source, signals
from runqscale.scaler.model import CurrentState, Recommendation, SignalWindow, WorkloadRef

CONTRACT_KEYS = {
    "ts",
    "workload",
    "policy",
    "signals",
    "current",
    "recommended",
    "action",
    "reason",
    "dry_run",
    "applied",
    "error",
}
SIZE_KEYS = {"replicas", "cpu_request_cores", "cpu_limit_cores"}


def _rec(ts: float, replicas: int = 3, action: str = "none") -> Recommendation:
    cur = CurrentState(2, 0.5, 1.0)
    return Recommendation(
        ts=ts,
        workload=WorkloadRef("shop", "web"),
        policy="showar",
        signals={"runq_p95_seconds": 0.004, "cpu_usage_cores": None},
        current=cur,
        recommended=CurrentState(replicas, 0.5, 1.0),
        action=action,  # type: ignore[arg-type]
        reason="because 4.00 ms",
    )


# ------------------------------------------------------------------ recommendations log


def test_log_round_trip_and_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "recs.jsonl"
    assert log.append(path, [_rec(1.0, 3, "scale_out"), _rec(2.0)]) == 2
    assert log.append(path, [_rec(3.0)]) == 1
    assert len(synced) == 2  # one fsync per append batch
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    obj = json.loads(lines[0])
    assert set(obj) == CONTRACT_KEYS
    assert obj["workload"] == {"namespace": "shop", "kind": "Deployment", "name": "web"}
    assert set(obj["current"]) == SIZE_KEYS and set(obj["recommended"]) == SIZE_KEYS
    assert obj["action"] == "scale_out" and obj["error"] is None
    assert obj["dry_run"] is True and obj["applied"] is False
    got = log.read(path)
    assert [r.ts for r in got.recommendations] == [1.0, 2.0, 3.0]
    assert got.recommendations[0] == _rec(1.0, 3, "scale_out")
    assert not got.torn_last_line


def test_log_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "recs.jsonl"
    log.append(path, [_rec(1.0), _rec(2.0)])
    full = json.dumps(_rec(3.0).to_json())
    with open(path, "a") as f:
        f.write(full[: len(full) // 2])  # a writer died mid-line
    got = log.read(path)
    assert got.torn_last_line and len(got.recommendations) == 2
    # the next append ends the torn line first, so its own lines stay readable
    log.append(path, [_rec(4.0)])
    got = log.read(path)
    assert [r.ts for r in got.recommendations] == [1.0, 2.0, 4.0]
    assert got.skipped_torn_lines == 1 and not got.torn_last_line


def test_log_rejects_a_bad_line_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "recs.jsonl"
    log.append(path, [_rec(1.0)])
    with open(path, "a") as f:
        f.write('{"ts": 2, "workload": "not an object"}\n')
    log.append(path, [_rec(3.0)])
    with pytest.raises(log.LogError, match=r"recs.jsonl:2: not a recommendation"):
        log.read(path)


# ------------------------------------------------------------------ signals file


GOOD = {
    "ts": 1000.0,
    "workload": "shop/web",
    "replicas": 2,
    "ready_replicas": 2,
    "cpu_usage_cores": 1.2,
    "cpu_request_cores": 0.5,
    "cpu_limit_cores": 1.0,
    "runq_p95_seconds": 0.004,
    "throttled_ratio": 0.0,
    "request_rate": 50.0,
}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "signals.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_signals_file_parses_and_nulls_are_missing(tmp_path: Path) -> None:
    second = {**GOOD, "ts": 1003.0, "runq_p95_seconds": None, "replicas": 3}
    p = _write(
        tmp_path,
        [
            json.dumps(GOOD),
            "",
            json.dumps(second),
            json.dumps({"ts": 1001, "workload": "shop/db", "extra_field": "ignored"}),
        ],
    )
    samples = signals.read_file(p)
    wins = signals.windows_from_samples(samples)
    web = wins[WorkloadRef("shop", "web")]
    assert web.ts.tolist() == [1000.0, 1003.0]
    assert web.last("runq_p95_seconds") is None and web.last("replicas") == 3
    db = wins[WorkloadRef("shop", "db")]
    assert db.last("cpu_usage_cores") is None


def test_signals_file_carries_the_wait_split_by_holder(tmp_path: Path) -> None:
    held = {"runq_wait_same_cgroup_seconds_per_second": 0.1,
            "runq_wait_other_cgroup_seconds_per_second": 0.7,
            "runq_wait_kernel_seconds_per_second": 0.0,
            "runq_wait_idle_seconds_per_second": None}
    p = _write(tmp_path, [json.dumps({**GOOD, **held})])
    web = signals.windows_from_samples(signals.read_file(p))[WorkloadRef("shop", "web")]
    assert {f: web.last(f) for f in held} == held


BAD = [
    ("not json", "{oops", None, "not valid JSON"),
    ("not an object", "[1, 2]", None, "not a JSON object"),
    ("ts missing", json.dumps({**GOOD, "ts": None}), "ts", "unix seconds"),
    ("ts a string", json.dumps({**GOOD, "ts": "now"}), "ts", "unix seconds"),
    (
        "workload without namespace",
        json.dumps({**GOOD, "workload": "web"}),
        "workload",
        "namespace/name",
    ),
    ("replicas negative", json.dumps({**GOOD, "replicas": -1}), "replicas", "within"),
    ("replicas fractional", json.dumps({**GOOD, "replicas": 2.5}), "replicas", "whole number"),
    ("replicas boolean", json.dumps({**GOOD, "replicas": True}), "replicas", "number or null"),
    (
        "usage NaN",
        json.dumps({**GOOD, "cpu_usage_cores": float("nan")}),
        "cpu_usage_cores",
        "finite",
    ),
    (
        "usage Infinity",
        json.dumps({**GOOD, "cpu_usage_cores": float("inf")}),
        "cpu_usage_cores",
        "finite",
    ),
    (
        "p95 huge (ms written as s?)",
        json.dumps({**GOOD, "runq_p95_seconds": 4000}),
        "runq_p95_seconds",
        "within",
    ),
    (
        "throttled above 1",
        json.dumps({**GOOD, "throttled_ratio": 1.5}),
        "throttled_ratio",
        "within",
    ),
    (
        "p95 a string",
        json.dumps({**GOOD, "runq_p95_seconds": "4ms"}),
        "runq_p95_seconds",
        "number or null",
    ),
    (
        "wait by holder negative",
        json.dumps({**GOOD, "runq_wait_other_cgroup_seconds_per_second": -0.1}),
        "runq_wait_other_cgroup_seconds_per_second",
        "other_cgroup held the CPU",
    ),
    ("pods not a list", json.dumps({**GOOD, "pods": {"a": 1}}), "pods", "list"),
    (
        "pod bad field",
        json.dumps({**GOOD, "pods": [{"name": "a", "ready": "yes"}]}),
        "pods[0].ready",
        "bad value",
    ),
]


@pytest.mark.parametrize(("name", "line", "field", "text"), BAD, ids=[b[0] for b in BAD])
def test_signals_file_errors_name_line_and_field(tmp_path, name, line, field, text) -> None:
    p = _write(tmp_path, [json.dumps(GOOD), line])
    with pytest.raises(signals.SignalsError) as exc:
        signals.read_file(p)
    msg = str(exc.value)
    assert "signals.jsonl:2:" in msg
    assert text in msg
    if field:
        assert f"field {field!r}" in msg
    assert ";" in msg and "\n" not in msg  # one line: what is wrong; how to fix it


def test_window_at_slices_the_recorded_window() -> None:
    samples = [signals.parse_sample({**GOOD, "ts": 1000.0 + 3 * i}, "x") for i in range(10)]
    full = signals.windows_from_samples(samples)[WorkloadRef("shop", "web")]
    w = signals.window_at(full, 1012.0, 9.0)
    assert w is not None and w.ts.tolist() == [1006.0, 1009.0, 1012.0]
    assert signals.window_at(full, 999.0, 10.0) is None


# ------------------------------------------------------------------ Prometheus answers


class _FakeProm(BaseHTTPRequestHandler):
    answers: dict[str, object] = {}

    def do_GET(self) -> None:  # noqa: N802
        from urllib.parse import parse_qs, urlparse

        q = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        body = self.answers.get("*")
        for key, ans in self.answers.items():
            if key != "*" and key in q:
                body = ans
        if isinstance(body, tuple):
            self.send_response(body[0])
            self.end_headers()
            self.wfile.write(body[1].encode())
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body if isinstance(body, bytes) else json.dumps(body).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_prom() -> Iterator[tuple[str, type[_FakeProm]]]:
    handler = type("H", (_FakeProm,), {"answers": {}})
    srv = HTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()


def _matrix(*series: tuple[dict, list]) -> dict:
    return {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": m, "values": v} for m, v in series]},
    }


def test_prometheus_answers_are_validated(fake_prom) -> None:
    url, handler = fake_prom
    now = 10_000.0
    lbl = {"namespace": "shop", "workload": "web"}
    handler.answers = {
        "*": _matrix(),  # empty results: fields missing
        "runqscale_runqueue_latency": _matrix(
            (lbl, [[now - 3, "0.004"], [now, "NaN"]]),
            ({"namespace": "shop", "workload": "stale"}, [[now - 900, "0.010"]]),
            ({"workload": "no-namespace"}, [[now, "0.010"]]),
        ),
        "runqscale_cpu_usage_seconds_total": _matrix((lbl, [[now - 3, "+Inf"], [now, "1.5"]])),
        "runqscale_cpu_throttled": _matrix((lbl, [[now, "1e300"]])),
        "kube_deployment_spec_replicas": _matrix((lbl, [[now, "3"], ["bad"]])),
    }
    src = prometheus_source.PrometheusSource(url, staleness_seconds=120)
    got = src.fetch(now, 60, 3)
    by_ts = {s.ts: s for s in got.samples if s.workload.name == "web"}
    assert by_ts[now - 3].runq_p95_seconds == 0.004
    assert by_ts[now].runq_p95_seconds is None  # NaN -> missing
    assert by_ts[now - 3].cpu_usage_cores is None and by_ts[now].cpu_usage_cores == 1.5
    assert by_ts[now].throttled_ratio is None  # huge -> missing
    assert by_ts[now].replicas == 3
    assert by_ts[now].request_rate is None  # empty answer -> missing
    assert {s.workload.name for s in got.samples} == {"web"}  # stale and unlabelled dropped
    text = "\n".join(got.warnings)
    assert "NaN" in text and "stale" in text and "outside" in text and "malformed" in text


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((500, "boom"), "HTTP 500"),
        (b"<html>not json</html>", "not JSON"),
        ({"status": "error", "error": "parse error at char 3"}, "parse error"),
        ({"status": "success", "data": {"resultType": "vector", "result": []}}, "matrix"),
    ],
)
def test_prometheus_errors_are_clear(fake_prom, answer, message) -> None:
    url, handler = fake_prom
    handler.answers = {"*": answer}
    with pytest.raises(prometheus_source.PrometheusError, match=message):
        prometheus_source.PrometheusSource(url).fetch(10_000.0, 60, 3)


def test_prometheus_unreachable() -> None:
    with pytest.raises(prometheus_source.PrometheusError, match="cannot reach"):
        src = prometheus_source.PrometheusSource("http://127.0.0.1:9", timeout_seconds=2)
        src.fetch(1e4, 60, 3)


# ------------------------------------------------------------------ CLI and report


def _signals_file(tmp_path: Path, n: int = 40) -> Path:
    lines = []
    for i in range(n):
        t = 1000.0 + 3 * i
        lines.append(json.dumps({**GOOD, "ts": t, "runq_p95_seconds": 0.02}))  # 4x target
        lines.append(
            json.dumps(
                {
                    **GOOD,
                    "ts": t,
                    "workload": "shop/db",
                    "runq_p95_seconds": 0.005,
                    "cpu_usage_cores": 0.9,
                }
            )
        )
    return _write(tmp_path, lines)


def _run(args: list[str]):
    return CliRunner().invoke(root, ["scaler", *args], catch_exceptions=False)


def test_cli_once_writes_the_log(tmp_path: Path) -> None:
    sig = _signals_file(tmp_path)
    out = tmp_path / "recs.jsonl"
    res = _run(["--policy", "showar", "--signals", str(sig), "--once", "--log", str(out)])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["workload"]["name"] for r in recs} == {"web", "db"}
    web = next(r for r in recs if r["workload"]["name"] == "web")
    assert set(web) == CONTRACT_KEYS
    assert web["action"] == "scale_out" and web["recommended"]["replicas"] > 2
    assert web["ts"] == 1000.0 + 3 * 39 and web["dry_run"] is True
    assert web["signals"]["runq_p95_seconds"] == 0.02
    assert "20.00 ms" in web["reason"]


@pytest.mark.parametrize(("policy", "period"), [("showar", 3), ("hpa", 15), ("vpa", 60)])
def test_cli_replay_decides_at_the_policy_period(tmp_path: Path, policy: str, period: int):
    sig = _signals_file(tmp_path)  # 40 samples, 3 s apart: 117 s
    res = _run(["--policy", policy, "--signals", str(sig), "--json", "--workload", "shop/web"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    ts = [r["ts"] for r in recs]
    assert ts == [1000.0 + k * period for k in range(len(ts))]
    assert len(ts) == 117 // period + 1


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    sig = _write(tmp_path, [json.dumps(GOOD), json.dumps({**GOOD, "replicas": "two"})])
    res = _run(["--signals", str(sig), "--once"])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "--signals" in err and "signals.jsonl:2" in err and "'replicas'" in err
    assert "null if unknown" in err  # the fix


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--once"], "exactly one signal source"),
        (["--apply", "--signals", "SIG"], "--apply"),
        (["--target-runq-p95", "fast", "--signals", "SIG"], "not a duration"),
        (["--prometheus", "localhost:9090"], "not an http(s) URL"),
        (["--min-replicas", "5", "--max-replicas", "3", "--signals", "SIG"], "swap them"),
        (["--workload", "web", "--signals", "SIG"], "namespace/name"),
        (["--signals", "/nonexistent/signals.jsonl"], "no such file"),
        (["--policy", "nope", "--signals", "SIG"], "'nope' is not one of"),
        (["--bogus"], "No such option '--bogus'"),
        (["--max-replicas", "0", "--signals", "SIG"], "--max-replicas"),
        (["report"], "Missing argument 'FILE'"),
    ],
)
def test_cli_usage_errors(tmp_path: Path, args: list[str], text: str) -> None:
    sig = _signals_file(tmp_path, 3)
    res = _run([str(sig) if a == "SIG" else a for a in args])
    assert res.exit_code == 2, res.output
    assert text in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_config_file(tmp_path: Path) -> None:
    sig = _signals_file(tmp_path, 5)
    cfg = tmp_path / "scaler.toml"
    cfg.write_text(
        f'policy = "hpa"\nsignals = "{sig}"\nonce = true\njson = true\nmax-replicas = 3\n'
    )
    res = _run(["--config", str(cfg)])
    assert res.exit_code == 0, res.stderr
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    assert {r["policy"] for r in recs} == {"hpa"}
    assert all(r["recommended"]["replicas"] <= 3 for r in recs)
    cfg.write_text('polcy = "hpa"\n')
    res = _run(["--config", str(cfg)])
    assert res.exit_code == 2 and "unknown key 'polcy'" in res.stderr


def test_report_table_and_png(tmp_path: Path) -> None:
    sig = _signals_file(tmp_path)
    out = tmp_path / "recs.jsonl"
    for policy in ("showar", "hpa"):
        assert _run(["--policy", policy, "--signals", str(sig), "--log", str(out)]).exit_code == 0
    with open(out, "a") as f:
        f.write('{"ts": 12')  # torn last line
    png = tmp_path / "timeline.png"
    res = _run(["report", str(out), "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert "shop/web [showar]" in res.output and "shop/db [hpa]" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    res = _run(["report", str(out), "--png", str(png), "--json"])
    summary = json.loads(res.stdout)["workloads"]
    web = summary["shop/web [showar]"]
    assert web["decisions"] == 40 and web["actions"]["scale_out"] >= 1
    assert summary["shop/web [hpa]"]["decisions"] == 8


def test_report_bad_log_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "recs.jsonl"
    bad.write_text('{"ts": 1}\n{"ts": 2}\n')
    res = _run(["report", str(bad)])
    assert res.exit_code == 2 and "recs.jsonl:1" in res.stderr


def test_window_rejects_ragged_series() -> None:
    import numpy as np

    with pytest.raises(ValueError, match="samples"):
        SignalWindow(WorkloadRef("a", "b"), np.arange(3.0), {"replicas": np.arange(2.0)})
