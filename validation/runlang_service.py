"""The runlang code-runner as a real service (one replica = one process).

`POST /api/run` with `{"language": "python", "source": "..."}` runs the source in a fresh Python
subprocess with a timeout, as the runlang paper's runpython does, and answers
`{"ok", "stdout", "stderr", "exit_code", "timed_out", "seconds", "replica"}`. The subprocess is a
child of this process, so it runs in this replica's cgroup and is charged to its CPU quota.
`GET /api/describe` says what the service runs; `GET /healthz` is the readiness check.

SIGTERM drains: the listener stops accepting, requests in flight finish, then the process exits.

    python -m runqscale.validation.runlang_service --port 8081 --replica r1
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LANGUAGES = ("python",)
MAX_SOURCE_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 16 * 1024

# What the load generator submits: CPU-bound, so a replica's CPU scales with its request rate.
DEFAULT_SOURCE = "print(sum(i * i for i in range(200000)))"


class _Handler(BaseHTTPRequestHandler):
    server: RunlangServer
    protocol_version = "HTTP/1.1"
    timeout = 15  # idle keep-alive connections must not hold the drain open

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Replica", self.server.replica)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/healthz":
            self._send(200, {"ok": True, "replica": self.server.replica})
        elif self.path == "/api/describe":
            self._send(200, {
                "service": "runlang",
                "languages": list(LANGUAGES),
                "timeout_seconds": self.server.timeout_s,
                "max_source_bytes": MAX_SOURCE_BYTES,
                "replica": self.server.replica,
                "python": sys.version.split()[0],
            })
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/api/run":
            self._send(404, {"error": f"no route {self.path}"})
            return
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        if not 0 <= n <= MAX_SOURCE_BYTES:
            self._send(413, {"error": f"body must be 0..{MAX_SOURCE_BYTES} bytes"})
            return
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
            lang, source = req.get("language", "python"), req["source"]
            if not isinstance(source, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            self._send(400, {"error": 'expected JSON {"language": "python", "source": "..."}'})
            return
        if lang not in LANGUAGES:
            self._send(400, {"error": f"language {lang!r} not supported; use one of {LANGUAGES}"})
            return
        self._send(200, run_python(source, self.server.timeout_s, self.server.replica))


def run_python(source: str, timeout_s: float, replica: str = "") -> dict:
    """Run `source` in a new isolated interpreter; never raises for the program's failures."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-I", "-S", "-c", source], capture_output=True,
                           timeout=timeout_s, stdin=subprocess.DEVNULL)
        out, err, code, timed_out = p.stdout, p.stderr, p.returncode, False
    except subprocess.TimeoutExpired as e:
        out, err, code, timed_out = e.stdout or b"", e.stderr or b"", None, True
    return {
        "ok": code == 0,
        "stdout": out[:MAX_OUTPUT_BYTES].decode(errors="replace"),
        "stderr": err[:MAX_OUTPUT_BYTES].decode(errors="replace"),
        "exit_code": code,
        "timed_out": timed_out,
        "seconds": time.perf_counter() - t0,
        "replica": replica,
    }


def runlang_argv(port: int, name: str, timeout_s: float) -> list[str]:
    """One replica of this service, for the local actuator's `argv(port, name)`."""
    return [sys.executable, "-m", "runqscale.validation.runlang_service", "--port", str(port),
            "--replica", name, "--timeout", str(timeout_s)]


class RunlangServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins requests in flight: the drain
    block_on_close = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], replica: str, timeout_s: float) -> None:
        super().__init__(addr, _Handler)
        self.replica, self.timeout_s = replica, timeout_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="runlang code-runner replica")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--replica", default="r0")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-run timeout, seconds")
    a = ap.parse_args(argv)
    srv = RunlangServer((a.host, a.port), a.replica, a.timeout)

    def drain(_sig: int, _frm: object) -> None:
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.server_close()  # waits for requests in flight
    return 0


if __name__ == "__main__":
    sys.exit(main())
