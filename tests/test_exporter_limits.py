"""What any number of clients can make the agent's /metrics endpoint hold is bounded (issue 18:
the agent's memory while serving; it is a guest on every node). Real sockets, the real server:
connections over the cap (overall and per address) get 503 and the others keep working; a
client trickling its request head, or not reading its response, is cut off at the deadline; at
most `max_scrapes` bodies are rendered at once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

from agent_helpers import until

from runqscale.exporter.families import RowFamily, label_string
from runqscale.exporter.server import MetricsServer, Registry
from runqscale.http1 import get


class Rows:
    """`n` gauge rows; with `gate`, collect() waits for it (a scrape held mid-render)."""

    def __init__(self, n: int = 1, gate: threading.Event | None = None) -> None:
        self.n, self.gate = n, gate
        self.inside = self.most_inside = 0
        self._lock = threading.Lock()

    def collect(self) -> Iterator[RowFamily]:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            if self.gate is not None:
                self.gate.wait(10)
            fam = RowFamily("rq_demo", "doc", "gauge", ("container",))
            for i in range(self.n):
                c = f"container-{i:08d}-with-a-long-name-as-containerd-gives"
                fam.add((c,), label_string(("container",), (c,)), float(i))
            yield fam
        finally:
            with self._lock:
                self.inside -= 1


def _serve(collector: Rows, **limits: float) -> MetricsServer:
    registry = Registry()
    registry.register(collector)
    srv = MetricsServer(("127.0.0.1", 0), registry, healthy=lambda: True, **limits)  # type: ignore[arg-type]
    srv.serve_in_thread()
    return srv


def _stop(srv: MetricsServer) -> None:
    srv.shutdown()
    srv.server_close()


def _scrape(srv: MetricsServer) -> tuple[int, bytes]:
    with get("127.0.0.1", srv.server_address[1], "/metrics", {}, timeout=10) as r:
        return r.status, r.read()




def _closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `s` (EOF or reset), or None if it stayed open."""
    t0 = time.monotonic()
    s.settimeout(0.05)
    while time.monotonic() - t0 < seconds:
        try:
            if s.recv(65536) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


def test_connections_over_the_cap_get_503_and_the_others_keep_working() -> None:
    srv = _serve(Rows(), max_connections=3)
    idle: list[socket.socket] = []
    try:
        for _ in range(3):
            idle.append(socket.create_connection(("127.0.0.1", srv.server_address[1])))
        assert until(lambda: srv.connections == 3, 3)
        with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=3) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"Connection: close" in answer and srv.refusals()["connection_limit"] == 1
        idle.pop().close()
        assert until(lambda: srv.connections == 2, 3)
        status, body = _scrape(srv)
        assert status == 200 and b"rq_demo" in body
    finally:
        for s in idle:
            s.close()
        _stop(srv)


def test_a_client_trickling_its_request_head_is_cut_off_at_the_deadline() -> None:
    """One header byte every 0.3 s never trips the 10 s per-read timeout; the head deadline
    (1 s here, 10 s by default) ends it, and a scrape meanwhile is served."""
    srv = _serve(Rows(), head_timeout=1.0)
    try:
        with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=3) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            t0, closed = time.monotonic(), False
            while time.monotonic() - t0 < 4 and not closed:
                try:
                    s.sendall(b"X")
                except OSError:
                    closed = True
                    break
                closed = _closed_within(s, 0.3) is not None
            took = time.monotonic() - t0
            assert _scrape(srv)[0] == 200
        assert closed, "a trickling client kept its connection past the head deadline"
        assert 0.8 <= took <= 2.5, took
        assert srv.refusals()["deadline"] == 1
        assert until(lambda: srv.connections == 0, 3)
    finally:
        _stop(srv)


def test_an_idle_kept_alive_connection_is_closed_at_the_head_deadline() -> None:
    """... and not counted as refused: Prometheus keeps its connection between scrapes, and
    at a scrape interval over the head deadline every scrape would otherwise count."""
    srv = _serve(Rows(), head_timeout=1.0)
    try:
        with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=3) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"\r\n0\r\n\r\n" not in got:  # the whole chunked body
                got += s.recv(65536)
            assert got.startswith(b"HTTP/1.1 200 ")
            took = _closed_within(s, 4)
        assert took is not None and 0.5 <= took <= 2.5, took
        assert srv.refusals()["deadline"] == 0
    finally:
        _stop(srv)


def test_a_client_that_does_not_read_its_response_is_cut_off_at_the_deadline() -> None:
    """A ~10 MB body to a client that never reads: the server's write blocks once the socket
    buffers are full; the response deadline (1 s here) shuts the connection down, the scrape's
    thread ends and its render slot is free again."""
    rows = Rows(n=120_000)
    srv = _serve(rows, response_timeout=1.0, max_scrapes=1)
    try:
        with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=3) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert until(lambda: srv.refusals()["deadline"] == 1, 5), \
                "the stalled response was not cut off"
        assert until(lambda: srv.connections == 0, 3)
        srv.response_timeout = 60.0  # a 10 MB body to this test's own reader, on a busy machine
        status, body = _scrape(srv)  # the only render slot was released
        assert status == 200 and body.count(b"\n") > 120_000
    finally:
        _stop(srv)


def test_at_most_max_scrapes_bodies_are_rendered_at_once() -> None:
    """Two scrapes held mid-render take both slots; a third waits `scrape_wait` (1 s here, 5 s
    by default), gets 503, and the two held ones complete once released."""
    gate = threading.Event()
    rows = Rows(gate=gate)
    srv = _serve(rows, max_scrapes=2, scrape_wait=1.0, response_timeout=30.0)
    results: list[int] = []
    try:
        held = [threading.Thread(target=lambda: results.append(_scrape(srv)[0]))
                for _ in range(2)]
        for t in held:
            t.start()
        assert until(lambda: rows.inside == 2, 3)
        t0 = time.monotonic()
        status, body = _scrape(srv)  # a third waits for a slot, then gives up
        waited = time.monotonic() - t0
        assert status == 503 and b"too many scrapes" in body
        assert 0.9 <= waited <= 3.0, waited
        gate.set()
        for t in held:
            t.join(10)
        assert results == [200, 200] and rows.most_inside == 2
        assert _scrape(srv)[0] == 200
        assert srv.refusals() == {"connection_limit": 0, "scrape_limit": 1, "deadline": 0,
                                  "unauthorized": 0}
    finally:
        gate.set()
        _stop(srv)


def test_over_tls_a_silent_client_is_cut_off_during_the_handshake(tmp_path) -> None:
    """The head deadline starts at accept: a client that connects to the TLS endpoint and never
    sends its ClientHello holds its thread only that long; a real TLS scrape is served."""
    import ssl

    from runqscale.agent.bench import self_signed_cert
    from runqscale.exporter.server import tls_context

    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    self_signed_cert(cert, key)
    registry = Registry()
    registry.register(Rows())
    srv = MetricsServer(("127.0.0.1", 0), registry, healthy=lambda: True,
                        ssl_context=tls_context(cert, key), head_timeout=1.0)
    srv.serve_in_thread()
    try:
        with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=3) as s:
            took = _closed_within(s, 4)
        assert took is not None and 0.5 <= took <= 2.5, took
        assert srv.refusals()["deadline"] == 1
        client = ssl.create_default_context(cafile=cert)
        with get("127.0.0.1", srv.server_address[1], "/metrics", {}, timeout=10,
                 tls=client) as r:
            assert r.status == 200 and b"rq_demo" in r.read()
        assert until(lambda: srv.connections == 0, 3)
    finally:
        _stop(srv)


def test_one_address_gets_at_most_max_per_peer_connections() -> None:
    """An address over its share gets 503 while another address still connects and scrapes."""
    srv = _serve(Rows(), max_connections=32, max_per_peer=2)
    port = srv.server_address[1]
    idle: list[socket.socket] = []
    try:
        for _ in range(2):
            idle.append(socket.create_connection(("127.0.0.1", port),
                                                 source_address=("127.0.0.2", 0)))
        assert until(lambda: srv.connections == 2, 3)
        with socket.create_connection(("127.0.0.1", port), timeout=3,
                                      source_address=("127.0.0.2", 0)) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        status, body = _scrape(srv)  # from 127.0.0.1
        assert status == 200 and b"rq_demo" in body
    finally:
        for s in idle:
            s.close()
        _stop(srv)
