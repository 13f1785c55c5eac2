"""Prometheus down and back under `runqscale scaler --prometheus URL` (issue 10).

A real Prometheus (Debian's, the conftest `prometheus` fixture) scrapes a small exporter every
second; the scaler runs as a subprocess deciding every second. Prometheus is stopped for OUTAGE_S
and started again on the same port and data directory. While it is away the scaler must keep
running, print one warning line per round and decide nothing; after it is back it must decide
again, and never on a sample older than --max-signal-age (right after a restart Prometheus answers
a range query with the pre-outage values until its first scrape). The exporter's p95 gauge
encodes the second it was scraped, so each logged decision says how old its signal was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

OUTAGE_S = float(os.environ.get("RUNQSCALE_PROM_OUTAGE_S", "8"))
MAX_AGE_S = 3.0
PERIOD_S = 1.0


def _p95_now() -> float:
    """A run-queue p95 (2-12 ms) that encodes the current second modulo 1000."""
    return 0.002 + (int(time.time()) % 1000) * 1e-5


def _signal_age(rec: dict) -> float:
    scraped = round((rec["signals"]["runq_p95_seconds"] - 0.002) / 1e-5)
    return (rec["ts"] - scraped) % 1000


class _Exporter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        lbl = 'namespace="shop",pod="web-7d4b9c8f6d-x2k5p",container="app"'
        body = f"runqscale_runqueue_latency_p95_seconds{{{lbl}}} {_p95_now():.5f}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _restart(srv) -> float:
    """Start the stopped Prometheus again, same flags (port, data dir); returns the start time."""
    t = time.time()
    srv.proc = subprocess.Popen(srv.proc.args, stdout=srv.log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    srv._wait_ready()
    return t


def test_prometheus_down_and_back(prometheus, tmp_path):
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    srv = prometheus([f"127.0.0.1:{exporter.server_address[1]}"])
    _wait(lambda: srv.query("runqscale_runqueue_latency_p95_seconds"), 30, "the first scrape")
    log_path, err_path = tmp_path / "recs.jsonl", tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "runqscale.agent.cli", "scaler", "--policy", "showar",
           "--prometheus", srv.url, "--period", f"{PERIOD_S:g}s", "--window", "20s",
           "--rate-window", "5s", "--max-signal-age", f"{MAX_AGE_S:g}s", "--log", str(log_path)]
    with err_path.open("wb") as err:
        scaler = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait(lambda: _records(log_path), 30, "the first decision")
        srv.proc.terminate()
        srv.proc.wait(10)
        t_down = time.time()
        time.sleep(0.5)  # a round in flight when Prometheus stopped may still land
        before, err_before = len(_records(log_path)), len(err_path.read_text().splitlines())
        time.sleep(OUTAGE_S)
        assert scaler.poll() is None, err_path.read_text()[-2000:]
        during = _records(log_path)[before:]
        warnings = err_path.read_text().splitlines()[err_before:]
        unreachable = [w for w in warnings if "cannot reach Prometheus" in w]
        t_up = _restart(srv)
        first = _wait(lambda: [r for r in _records(log_path) if r["ts"] > t_up], 60,
                      "a decision after Prometheus restarted")
        recovery = time.time() - t_up  # upper bound: seen by polling every 50 ms
        first_ts = min(r["ts"] for r in first)
        time.sleep(3 * PERIOD_S)
        after = [r for r in _records(log_path) if r["ts"] > t_up]
        assert scaler.poll() is None, err_path.read_text()[-2000:]
    finally:
        scaler.terminate()
        scaler.wait(10)
        exporter.shutdown()
        exporter.server_close()
    stale_warnings = [w for w in err_path.read_text().splitlines() if "s old (--max-signal" in w]
    ages = [_signal_age(r) for r in after]
    print(f"\nprometheus down/back figures: outage_s={OUTAGE_S:g} period_s={PERIOD_S:g} "
          f"decisions_during_outage={len(during)} unreachable_warnings={len(unreachable)} "
          f"stale_sample_warnings={len(stale_warnings)} "
          f"restart_to_first_decision_s={first_ts - t_up:.2f} (seen after {recovery:.2f}) "
          f"max_signal_age_after_s={max(ages):.0f} crashes=0 "
          f"down_for_s={t_up - t_down:.1f}")
    assert during == []
    # one line per round: the rounds that fit in the outage, give or take a Prometheus timeout
    assert 1 <= len(unreachable) <= OUTAGE_S / PERIOD_S + 2
    assert all(w.startswith("warning: ") for w in warnings)
    assert max(ages) <= MAX_AGE_S + 1.5, ages
    assert first_ts - t_up < 30
