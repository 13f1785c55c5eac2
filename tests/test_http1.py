"""The agent's HTTP/1.1 (runqscale/http1.py) over real sockets. Serving: what scrapers and probes
send is answered, keep-alive holds across requests, and malformed or oversized requests get a
clear status and a closed connection instead of a hung thread or a desynchronised stream.
Fetching: bodies framed every way a kubelet or API server frames them read back byte for byte,
line by line as a watch reads them, and broken framing is an error, never a short body."""

from __future__ import annotations

import http.client
import socket
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runqscale.exporter.families import RowFamily, label_string
from runqscale.exporter.server import MetricsServer, Registry
from runqscale.http1 import MAX_HEADERS, MAX_LINE, get


class One:
    def collect(self) -> Iterator[RowFamily]:
        fam = RowFamily("rq_demo", "doc", "gauge", ("container",))
        fam.add(("a",), label_string(("container",), ("a",)), 1.0)
        yield fam


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    registry = Registry()
    registry.register(One())
    srv = MetricsServer(("127.0.0.1", 0), registry, healthy=lambda: True)
    srv.serve_in_thread()
    yield srv
    srv.shutdown()
    srv.server_close()


def _raw(srv: MetricsServer, data: bytes) -> tuple[bytes, bool]:
    """Send `data`, read until the server closes or goes quiet: (what came back, closed)."""
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=3) as s:
        s.sendall(data)
        out, closed = b"", False
        s.settimeout(1.0)
        try:
            while chunk := s.recv(65536):
                out += chunk
            closed = True
        except TimeoutError:
            pass
    return out, closed


def test_keep_alive_serves_several_requests_on_one_connection(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    for path, status in (("/metrics", 200), ("/healthz", 200), ("/nope", 404),
                         ("/metrics?x=1", 200)):
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert r.status == status, path
        if path.startswith("/metrics"):
            assert b'rq_demo{container="a"} 1.0' in body
    conn.close()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
    (b"GET /metrics\r\n\r\n", 400),  # HTTP/0.9 is not served
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /metrics HTTP/1.1\r\nX: " + b"b" * MAX_LINE + b"\r\n\r\n", 431),
    (b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431),
    (b"GET /metrics HTTP/1.1\r\nA: b\r\n  folded\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
])
def test_bad_requests_get_a_status_and_a_closed_connection(server: MetricsServer,
                                                           request_bytes: bytes,
                                                           status: int) -> None:
    out, closed = _raw(server, request_bytes)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:80]
    assert closed and b"Connection: close" in out


def test_head_gets_405_without_a_body_and_a_closed_connection(server: MetricsServer) -> None:
    # a body after a HEAD answer would be read as the start of the next response
    out, closed = _raw(server, b"HEAD /metrics HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ") and b"Allow: GET" in head
    assert body == b"" and closed


def test_http10_gets_metrics_unframed_up_to_the_close(server: MetricsServer) -> None:
    out, closed = _raw(server, b"GET /metrics HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding" not in head
    assert body.startswith(b"# HELP rq_demo") and body.endswith(b"\n") and closed


def test_http10_and_connection_close_end_the_connection(server: MetricsServer) -> None:
    for req in (b"GET /healthz HTTP/1.0\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"):
        out, closed = _raw(server, req)
        assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"ok\n") and closed


def test_http11_without_close_stays_open_and_pipelines(server: MetricsServer) -> None:
    two = b"GET /healthz HTTP/1.1\r\n\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    out, closed = _raw(server, two)
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert not closed  # still open for a third


def test_a_request_with_a_body_is_answered_then_closed(server: MetricsServer) -> None:
    # the body is never read, so the stream could not be parsed after it: close instead
    out, closed = _raw(server, b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                               b"GET /healthz HTTP/1.1\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 1 and closed


def test_a_client_that_vanishes_mid_request_leaves_the_server_serving(
        server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=3) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: ")
    out, _ = _raw(server, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ")


def test_the_agent_imports_neither_http_server_nor_http_client() -> None:
    """The point of runqscale/http1.py: the agent's process never loads http.server or
    http.client (nor what only they bring: the email package, mimetypes, shutil)."""
    import subprocess

    # only what the agent's imports add (a site hook may load some of these before it)
    code = ("import sys; before = set(sys.modules); "
            "import runqscale.exporter.server, runqscale.agent.daemon_cmd, "
            "runqscale.agent.daemon; "
            "import runqscale.agent.pods; "
            "print(sorted({'http.server', 'http.client', 'email', 'mimetypes', 'shutil'} "
            "& (set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# -- fetching ------------------------------------------------------------------------------------

def _answer_once(response: bytes) -> tuple[int, list[bytes], threading.Thread]:
    """A server that reads one request's head, answers `response` verbatim and closes; returns
    its port, (after the fact) the request head it got, and its thread."""
    lsock = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                more = conn.recv(4096)
                if not more:  # the client gave up (e.g. it wanted TLS): keep what it sent
                    got.append(head)
                    return
                head += more
            got.append(head)
            conn.sendall(response)
        lsock.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock.getsockname()[1], got, t


def _chunked(body: bytes, cuts: list[int]) -> bytes:
    out, prev = b"", 0
    for c in [*sorted({c % (len(body) + 1) for c in cuts}), len(body)]:
        if c > prev:
            out += b"%x;ext=1\r\n%b\r\n" % (c - prev, body[prev:c])
            prev = c
    return out + b"0\r\nX-Trailer: y\r\n\r\n"


LINES = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\n"),
                 max_size=8)


@settings(max_examples=40, deadline=None)
@given(lines=LINES, cuts=st.lists(st.integers(0, 400), max_size=6),
       framing=st.sampled_from(["chunked", "length", "close"]))
def test_a_body_reads_back_whole_and_line_by_line_however_it_is_framed(
        lines: list[bytes], cuts: list[int], framing: str) -> None:
    body = b"".join(lines)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    for by_line in (False, True):
        if framing == "chunked":
            wire = head + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body, cuts)
        elif framing == "length":
            wire = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        else:
            wire = head + b"\r\n" + body
        port, _, _ = _answer_once(wire)
        with get("127.0.0.1", port, "/pods", {}, 5) as r:
            assert r.status == 200
            if by_line:
                got = []
                while line := r.readline():
                    got.append(line)
                assert got == lines
            else:
                assert r.read() == body


def test_the_request_names_host_target_and_headers_and_closes() -> None:
    port, got, _ = _answer_once(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    with get("127.0.0.1", port, "/api/v1/pods?watch=1", {"Authorization": "Bearer t"}, 5) as r:
        assert (r.status, r.reason, r.read()) == (204, "No Content", b"")
    head = got[0].decode()
    assert head.startswith("GET /api/v1/pods?watch=1 HTTP/1.1\r\n")
    for line in (f"Host: 127.0.0.1:{port}", "Connection: close", "Authorization: Bearer t"):
        assert line + "\r\n" in head


@pytest.mark.parametrize(("wire", "error"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
     ValueError),  # not a hex size
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", ConnectionError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", ConnectionError),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", ValueError),
    (b"SSH-2.0-OpenSSH\r\n\r\n", ValueError),
])
def test_broken_framing_is_an_error_not_a_short_body(wire: bytes, error: type) -> None:
    port, _, _ = _answer_once(wire)
    with pytest.raises(error) as raised:
        with get("127.0.0.1", port, "/", {}, 5) as r:
            r.read()
    # the socket closed on every error path, even while the error and its traceback live on
    # (the pod sources wait out a backoff inside their except block)
    assert raised.value is not None
    assert not [c for c in psutil.Process().net_connections("tcp")
                if c.raddr and c.raddr.port == port]


def test_many_lines_in_one_piece_read_in_linear_time() -> None:
    """A watch stream whose events arrive merged into one large piece (a proxy's buffering):
    each line costs its own length, not the buffer's."""
    body = b"".join(b'{"type":"MODIFIED","n":%d}\n' % i for i in range(60000))  # ~1.7 MB
    port, _, _ = _answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                           + body)
    with get("127.0.0.1", port, "/", {}, 5) as r:
        t0 = time.process_time()
        n = 0
        while r.readline():
            n += 1
        spent = time.process_time() - t0
    assert n == 60000
    assert spent < 1.0  # quadratic slicing took ~1.5 s for this body; linear takes ~0.05 s


def test_an_upper_case_https_url_still_means_tls_never_a_token_in_clear(tmp_path) -> None:
    """`HTTPS://...` is https (schemes are case-insensitive): the agent must start TLS, not
    send its bearer token to whatever listens in plain text."""
    from runqscale.agent.pods import HttpAuth, _open

    token = tmp_path / "token"
    token.write_text("SECRET-TOKEN\n")
    port, got, server = _answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    with pytest.raises((OSError, ValueError)):
        _open(f"HTTPS://127.0.0.1:{port}/pods", HttpAuth(str(token), insecure=True), 1.0)
    server.join(5)
    assert got and b"SECRET-TOKEN" not in got[0] and not got[0].startswith(b"GET ")


def test_a_watch_line_is_read_as_soon_as_its_chunk_arrives() -> None:
    """The API server sends a watch event per chunk, minutes apart: readline must return each
    event when its chunk is in, not wait for more of the body."""
    lsock = socket.create_server(("127.0.0.1", 0))
    first_read = threading.Event()

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"11\r\n{\"type\":\"ADDED\"}\n\r\n")
            assert first_read.wait(5)  # the client has the first event before the second
            conn.sendall(b"13\r\n{\"type\":\"DELETED\"}\n\r\n0\r\n\r\n")
        lsock.close()

    threading.Thread(target=serve, daemon=True).start()
    with get("127.0.0.1", lsock.getsockname()[1], "/api/v1/pods?watch=1", {}, 5) as r:
        assert r.readline() == b'{"type":"ADDED"}\n'
        first_read.set()
        assert r.readline() == b'{"type":"DELETED"}\n'
        assert r.readline() == b""


def test_metrics_over_tls_with_a_bearer_token(tmp_path) -> None:
    """The agent's HTTPS endpoint (--tls-cert/--tls-key, --auth-token-file) read by this
    module's own TLS client: 401 without the token, the metrics with it, on one server."""
    import ssl

    from runqscale.agent.bench import self_signed_cert
    from runqscale.exporter.server import tls_context
    from runqscale.tokens import TokenFile

    cert, key, token = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "token"
    self_signed_cert(str(cert), str(key))
    token.write_text("t0k3n\n")
    registry = Registry()
    registry.register(One())
    srv = MetricsServer(("127.0.0.1", 0), registry, healthy=lambda: True,
                        ssl_context=tls_context(str(cert), str(key)), token=TokenFile(str(token)))
    srv.serve_in_thread()
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        port = srv.server_address[1]
        with get("127.0.0.1", port, "/metrics", {}, 5, ctx) as r:
            assert r.status == 401 and r.headers["www-authenticate"]
        with get("127.0.0.1", port, "/metrics", {"Authorization": "Bearer t0k3n"}, 5,
                 ctx) as r:
            assert r.status == 200 and b'rq_demo{container="a"} 1.0' in r.read()
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_tls_fetch_by_host_name_loads_no_idna_codec(tmp_path) -> None:
    """An ASCII host name is handed to ssl as bytes: the fetch (certificate checked against
    the name) works and the idna codec's modules (~0.2 MB) stay out of the agent's process."""
    import subprocess

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    code = f"""
import ssl, sys
from runqscale.exporter.server import MetricsServer, Registry, tls_context
from runqscale.http1 import get
srv = MetricsServer(("127.0.0.1", 0), Registry(), healthy=lambda: True,
                    ssl_context=tls_context({str(cert)!r}, {str(key)!r}))
srv.serve_in_thread()
ctx = ssl.create_default_context(cafile={str(cert)!r})
with get("localhost", srv.server_address[1], "/healthz", {{}}, 5, ctx) as r:
    print(r.status, r.read().decode().strip(), "encodings.idna" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["200", "ok", "False"]


def test_a_request_that_would_split_is_refused_before_it_is_sent() -> None:
    for target, headers in (("/a b", {}), ("/pods", {"X": "1\r\nInjected: yes"})):
        with pytest.raises(ValueError):
            get("127.0.0.1", 9, target, headers, 1)
