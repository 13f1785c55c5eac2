"""/metrics behind TLS and a bearer token, and no secret in the agent's output (issue 10).

The real agent serves HTTPS with an openssl-generated certificate and a token file: no token,
a wrong one, the right one with a suffix, the right one under another scheme are all 401; the
right one is 200; a rotated token file takes effect without a restart and a removed one denies
everything. Meanwhile its pod source is pointed at a kubelet that refuses its token, through a
URL carrying a password, and its kubelet token file is rewritten with a token urllib rejects
(its error message used to quote the token). Every error is logged, and the agent's whole
stdout and stderr hold none of the secrets. The API server's watch path is checked in process:
an error event echoing the token is logged redacted."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from agent_helpers import FakeKubelet, FakePod
from conftest import require_root
from prometheus_helpers import free_port

from runqscale.agent.bench import self_signed_cert

RUNQSCALE = str(Path(sys.executable).parent / "runqscale")
METRICS_TOKEN = "mtok-7f3c9a1e5b2d4c6e8a0f"
ROTATED_TOKEN = "mtok-rotated-1b2c3d4e5f60718293"
KUBELET_TOKEN = "ktok-0a9b8c7d6e5f4a3b2c1d"
BAD_KUBELET_TOKEN = "ktok-bad-5e6f7a8b9c0d\nsecond-line-91827364"
URL_PASSWORD = "urlpw-6c5d4e3f2a1b"


def _status(url: str, ctx: ssl.SSLContext, header: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": header} if header else {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.kernel
def test_tls_token_auth_and_no_secret_in_the_output(tmp_path: Path) -> None:
    require_root()
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    self_signed_cert(str(cert), str(key))
    token = tmp_path / "metrics-token"
    token.write_text(METRICS_TOKEN + "\n")
    ktoken = tmp_path / "kubelet-token"
    ktoken.write_text("wrong-" + KUBELET_TOKEN + "\n")
    kubelet = FakeKubelet([FakePod.make("ns", "p", "c")], token=KUBELET_TOKEN)
    port = free_port()
    proc = subprocess.Popen(
        [RUNQSCALE, "agent", "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert),
         "--tls-key", str(key), "--auth-token-file", str(token), "--kubelet-url", kubelet.url,
         "--kubelet-token-file", str(ktoken), "--pods-refresh", "0.2s", "--interval", "0.5s",
         "--node-name", "test-node"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ctx = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}/metrics"
    codes: dict[str, int] = {}
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                if _status(f"https://127.0.0.1:{port}/healthz", ctx, None) == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        codes["missing"] = _status(url, ctx, None)
        codes["wrong"] = _status(url, ctx, "Bearer nope")
        codes["suffix"] = _status(url, ctx, f"Bearer {METRICS_TOKEN}x")
        codes["prefix"] = _status(url, ctx, f"Bearer {METRICS_TOKEN[:-1]}")
        codes["basic"] = _status(url, ctx, f"Basic {METRICS_TOKEN}")
        codes["right"] = _status(url, ctx, f"Bearer {METRICS_TOKEN}")
        with pytest.raises(OSError):  # plain HTTP to the TLS port: handshake fails, dropped
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        token.write_text(ROTATED_TOKEN + "\n")  # rotation: no restart
        codes["old-after-rotation"] = _status(url, ctx, f"Bearer {METRICS_TOKEN}")
        codes["rotated"] = _status(url, ctx, f"Bearer {ROTATED_TOKEN}")
        # the six 401s so far are counted as refusals, by reason, on the agent's own /metrics
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ROTATED_TOKEN}"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            body = r.read().decode()
        assert 'runqscale_agent_http_refused_total{reason="unauthorized"} 6.0' in body, \
            [ln for ln in body.splitlines() if "refused" in ln]
        assert 'runqscale_agent_http_refused_total{reason="connection_limit"} 0.0' in body
        time.sleep(1.0)  # the kubelet refuses the wrong token: logged
        ktoken.write_text(BAD_KUBELET_TOKEN + "\n")  # urllib rejects it, quoting it
        time.sleep(1.0)
        token.unlink()
        codes["token-file-removed"] = _status(url, ctx, f"Bearer {ROTATED_TOKEN}")
        assert _status(url.replace("/metrics", "/healthz"), ctx, None) == 200
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        kubelet.close()
    print(f"\nauth: {codes}; kubelet requests {kubelet.requests}")
    assert codes == {"missing": 401, "wrong": 401, "suffix": 401, "prefix": 401, "basic": 401,
                     "right": 200, "old-after-rotation": 401, "rotated": 200,
                     "token-file-removed": 401}
    output = out + err
    assert "pods (kubelet)" in err and "401" in err, err  # the errors were logged ...
    assert "whitespace or control characters" in err, err
    for secret in (METRICS_TOKEN, ROTATED_TOKEN, KUBELET_TOKEN,
                   *BAD_KUBELET_TOKEN.split("\n")):
        assert secret not in output, f"secret {secret[:6]}... in the agent's output:\n{output}"


def test_a_password_in_the_kubelet_url_is_never_logged(capfd) -> None:
    from runqscale.agent.pods import HttpAuth, KubeletPodSource

    src = KubeletPodSource(f"http://runqscale:{URL_PASSWORD}@127.0.0.1:1", HttpAuth(),
                           refresh=60)
    try:
        end = time.monotonic() + 5
        while src.errors == 0 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        src.close()
    err = capfd.readouterr().err
    assert src.errors >= 1 and "GET http://***@127.0.0.1:1/pods" in err, err
    assert URL_PASSWORD not in err + (src.last_error or "")


def test_apiserver_watch_error_echoing_the_token_is_logged_redacted(tmp_path: Path,
                                                                    capfd) -> None:
    from runqscale.agent.pods import ApiServerPodSource, HttpAuth

    secret = "sa-token-4d3c2b1a09f8e7d6"
    tok = tmp_path / "token"
    tok.write_text(secret)

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if "watch=1" in self.path:
                got = self.headers.get("Authorization", "")
                body = json.dumps({"type": "ERROR", "object": {
                    "code": 500, "message": f"cannot watch with {got}"}}) + "\n"
            else:
                body = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": "1"},
                                   "items": []})
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    import threading

    threading.Thread(target=srv.serve_forever, daemon=True).start()
    src = ApiServerPodSource(f"http://127.0.0.1:{srv.server_address[1]}", "node-1",
                             HttpAuth(str(tok)), watch_seconds=1)
    try:
        end = time.monotonic() + 5
        while src.errors == 0 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        src.close()
        srv.shutdown()
    captured = capfd.readouterr()
    assert src.errors >= 1
    assert "cannot watch with Bearer <redacted>" in captured.err, captured.err
    assert secret not in captured.err + captured.out + (src.last_error or "")
