"""Helpers for agent/exporter tests: the real `runqscale agent` process, a fake kubelet serving a
pod list, kubelet-like cgroup layouts in a sandbox, and /metrics parsing."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_helpers import free_port

RUNQSCALE = os.path.join(os.path.dirname(sys.executable), "runqscale")


@dataclass(frozen=True)
class FakePod:
    namespace: str
    name: str
    container: str
    uid: str
    container_id: str

    @classmethod
    def make(cls, namespace: str, name: str, container: str) -> FakePod:
        return cls(namespace, name, container, str(uuid.uuid4()), secrets.token_hex(32))

    def cgroup_name(self, qos: str = "burstable") -> str:
        """cgroupfs-driver layout, relative to a sandbox: kubepods/<qos>/pod<uid>/<id>."""
        return f"kubepods/{qos}/pod{self.uid}/{self.container_id}"

    def json(self) -> dict[str, Any]:
        return {"metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
                "spec": {"containers": [{"name": self.container}]},
                "status": {"containerStatuses": [
                    {"name": self.container, "containerID": f"containerd://{self.container_id}"}]}}


def pod_list(pods: list[FakePod]) -> dict[str, Any]:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {},
            "items": [p.json() for p in pods]}


class FakeKubelet:
    """Serves GET /pods like the kubelet's read-only port; counts requests. HTTP/1.1 with
    keep-alive, as the kubelet and the API server answer: a client that reads to EOF hangs."""

    def __init__(self, pods: list[FakePod], token: str | None = None) -> None:
        self.pods, self.token, self.requests = list(pods), token, 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                outer.requests += 1
                if outer.token and self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(pod_list(outer.pods)).encode()
                self.send_response(200 if self.path == "/pods" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AgentProcess:
    """`runqscale agent` as a child process on a free loopback port."""

    def __init__(self, *args: str, interval: str = "1s", window: str = "10s",
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.addr}"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [RUNQSCALE, "agent", "--listen", self.addr, "--interval", interval, "--window",
             window, "--node-name", "test-node", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        self.ready_after = self._wait_healthy()

    def _wait_healthy(self, timeout: float = 15.0) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited {self.proc.returncode}: {self.stderr()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"agent not healthy after {timeout}s")

    def scrape_text(self, headers: dict[str, str] | None = None) -> str:
        req = urllib.request.Request(self.url + "/metrics", headers=headers or {})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()

    def scrape(self) -> dict[str, list[Any]]:
        """family name -> samples (prometheus_client's parser: a real exposition parser)."""
        out: dict[str, list[Any]] = {}
        for fam in text_string_to_metric_families(self.scrape_text()):
            out.setdefault(fam.name, []).extend(fam.samples)
        return out

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read() if self.proc.stderr else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def samples_for(scrape: dict[str, list[Any]], name: str, **labels: str) -> list[Any]:
    return [s for fam in scrape.values() for s in fam
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def one_value(scrape: dict[str, list[Any]], name: str, **labels: str) -> float:
    got = samples_for(scrape, name, **labels)
    assert len(got) == 1, f"{name}{labels}: {len(got)} samples"
    return float(got[0].value)


def until(cond: Any, timeout: float, step: float = 0.01) -> bool:
    """Whether `cond()` turned true within `timeout` seconds (polled every `step`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False
