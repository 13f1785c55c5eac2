"""A real Prometheus (Debian's /usr/bin/prometheus) for tests: temp config, free loopback port,
1 s scrapes, and a small client for its HTTP query API."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any

from runqscale.ports import free_port

PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")


class PrometheusServer:
    def __init__(self, targets: list[str], scrape_interval: str = "1s",
                 job: str = "runqscale-agent", web_config: str | None = None,
                 rule_files: list[str] | None = None) -> None:
        """`web_config`: a --web.config.file (TLS, basic auth); the URL is then https.
        `rule_files`: recording/alerting rule files to load (evaluated every second)."""
        self.dir = tempfile.mkdtemp(prefix="runqscale-prom-")
        self.port = free_port()
        self.web_config = web_config
        self.url = f"{'https' if web_config else 'http'}://127.0.0.1:{self.port}"
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(
                "global:\n"
                f"  scrape_interval: {scrape_interval}\n"
                f"  scrape_timeout: {scrape_interval}\n"
                "  evaluation_interval: 1s\n"
                f"rule_files: {json.dumps(rule_files or [])}\n"
                "scrape_configs:\n"
                f"  - job_name: {job}\n"
                "    static_configs:\n"
                f"      - targets: {json.dumps(targets)}\n")
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
             *([f"--web.config.file={web_config}"] if web_config else [])],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.proc.returncode}): {self.logs()}")
            if self.web_config:  # secured: listening is enough, the test checks the rest
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready after {timeout}s: {self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-2000:]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the result vector ([{metric: {...}, value: [ts, "v"]}])."""
        q = {"query": expr}
        if at is not None:
            q["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(q)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
        if doc.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {doc}")
        return doc["data"]["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        res = self.query(expr, at)
        if not res:
            return None
        if len(res) != 1:
            raise AssertionError(f"{expr!r} returned {len(res)} series: {res}")
        return float(res[0]["value"][1])

    def targets_up(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/api/v1/targets", timeout=5) as r:
            return json.load(r)["data"]["activeTargets"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def have_prometheus() -> bool:
    return os.access(PROMETHEUS, os.X_OK)
