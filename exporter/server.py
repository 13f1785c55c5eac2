"""The agent's HTTP(S) endpoint: `/metrics` (optionally behind a bearer token) and `/healthz`.

A threaded socketserver speaking the HTTP/1.1 subset a scrape needs (runqscale/http1.py; no
framework and not http.server: memory is a feature). TLS, when configured, is negotiated
in the request's own thread, so a slow client never blocks accept(). The token is compared in
constant time and re-read when its file changes (runqscale/tokens.py: rotated secrets need no
restart).

What any number of clients can make the agent hold is bounded (it is a guest on the node):
- at most `max_connections` connections at once (a thread each), `max_per_peer` of them from one
  address; one more is answered 503 (or, over TLS, closed) from the accepting thread;
- at most `max_scrapes` /metrics bodies rendered at once (each holds a family's rows: about a
  megabyte at 500 containers); a scrape waits `scrape_wait` seconds for its turn, then gets
  503 (Prometheus retries at its next interval);
- deadlines: `head_timeout` seconds from accepting the connection to the end of its first
  request head (the TLS handshake included), and from the end of a response to the end of the
  next head (a client trickling bytes, or idling on a kept-alive connection, is cut off);
  `response_timeout` seconds to answer (a client that reads its body a byte at a time), counted
  again once a scrape has its render slot. The accepting thread checks them twice a second
  and shuts a late connection's socket down, which ends its thread.

The bounds keep memory and threads in check; they do not make the endpoint safe to expose: a
few addresses can still keep Prometheus waiting, so restrict who reaches the port (a
NetworkPolicy, --auth-token-file, TLS).
"""

from __future__ import annotations

import itertools
import os
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from runqscale.exporter.families import CONTENT_TYPE, RowFamily, iter_chunks
from runqscale.http1 import Handler, Request, whole_response
from runqscale.tokens import TokenFile

__all__ = ["MetricsServer", "TokenFile", "accepts_gzip", "gzipped", "tls_context"]


class Collector(Protocol):
    def collect(self) -> Iterable[RowFamily]: ...


class Registry:
    """The collectors a scrape renders, in registration order (client_python's registry,
    without the package: see exporter/families.py)."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def collect(self) -> Iterator[RowFamily]:
        for c in self._collectors:
            yield from c.collect()


MAX_CONNECTIONS = 32  # Prometheus keeps one per target (two for an HA pair), plus a few curls
MAX_PER_PEER = 8
MAX_SCRAPES = 2  # /metrics bodies rendered at once
SCRAPE_WAIT_S = 5.0  # for a render slot: under Prometheus' default 10 s scrape timeout
HEAD_TIMEOUT_S = 10.0
RESPONSE_TIMEOUT_S = 60.0  # a 500-container body (~6.6 MB) to a slow but honest reader
# why a connection or request was turned away (runqscale_agent_http_refused_total{reason})
REFUSALS = ("connection_limit", "scrape_limit", "deadline", "unauthorized")
BUSY = whole_response(503, b"too many open connections\n",
                      {"Content-Type": "text/plain; charset=utf-8"})


class _Conn:
    """One open connection: its socket (the TLS one once wrapped), the current deadline, and a
    duplicate of its descriptor to shut it down by. The duplicate names the same socket
    whatever happens to the original (TLS takes it over, a failed handshake closes it, the
    number is reused by a later connection) until it is closed with the connection."""

    __slots__ = ("sock", "deadline", "dup", "peer", "kept_alive")

    def __init__(self, sock: socket.socket, deadline: float | None, peer: str) -> None:
        self.sock, self.deadline, self.peer = sock, deadline, peer
        self.dup = socket.socket(fileno=os.dup(sock.fileno()))
        # waiting for the head of a request after the first: shut down at the deadline, but
        # not counted as refused (Prometheus keeps its connection open between scrapes)
        self.kept_alive = False


class MetricsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], registry: Registry,
                 healthy: Callable[[], bool], on_scrape: Callable[[float], None] | None = None,
                 ssl_context: Any = None, token: TokenFile | None = None,
                 gzip: bool = False, max_connections: int = MAX_CONNECTIONS,
                 max_per_peer: int = MAX_PER_PEER, max_scrapes: int = MAX_SCRAPES,
                 scrape_wait: float = SCRAPE_WAIT_S, head_timeout: float = HEAD_TIMEOUT_S,
                 response_timeout: float = RESPONSE_TIMEOUT_S) -> None:
        host = addr[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.registry, self.healthy, self.on_scrape = registry, healthy, on_scrape
        self.ssl_context, self.token, self.gzip = ssl_context, token, gzip
        self.max_connections, self.max_per_peer = max_connections, max_per_peer
        self.head_timeout, self.response_timeout = head_timeout, response_timeout
        self.scrape_wait = scrape_wait
        self.scrape_slots = threading.BoundedSemaphore(max_scrapes)
        self._conns: dict[int, _Conn] = {}  # by the accepted socket's id()
        self._conns_lock = threading.Lock()
        self._local = threading.local()  # the handler thread's _Conn
        self._refusals = dict.fromkeys(REFUSALS, 0)  # counted from several threads: locked
        self._refusals_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = str(client_address[0]) if isinstance(client_address, tuple) else ""
        with self._conns_lock:
            full = (len(self._conns) >= self.max_connections
                    or sum(c.peer == peer for c in self._conns.values()) >= self.max_per_peer)
            if not full:
                self._conns[id(request)] = _Conn(request, time.monotonic() + self.head_timeout,
                                                 peer)
        if full:
            self.refuse("connection_limit")
            if self.ssl_context is None:
                try:  # from the accepting thread: never wait for this client
                    request.setblocking(False)
                    request.send(BUSY)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = self._conns[id(request)]
        self._local.conn = conn
        request.settimeout(10)
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ValueError):
                return  # failed handshake: drop this connection only
            conn.sock = request
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            conn = self._conns.pop(id(request), None)
        if conn is not None:
            conn.dup.close()
            if conn.sock is not request:
                conn.sock.close()  # the TLS socket wrapped around it
        super().shutdown_request(request)

    def deadline(self, seconds: float, kept_alive: bool = False) -> None:
        """From a handler: the current connection must be done with what it does now within
        `seconds`; `kept_alive`: what it does now is wait for its next request."""
        conn = self._local.conn
        conn.deadline, conn.kept_alive = time.monotonic() + seconds, kept_alive

    def service_actions(self) -> None:
        """serve_forever's hook (every poll, 0.5 s): shut down connections past their deadline.
        shutdown(2) through the connection's duplicate descriptor ends the blocked read or
        write (or TLS handshake) in its thread, which then closes it; the TLS object is never
        touched from here."""
        now = time.monotonic()
        with self._conns_lock:  # held: shutdown_request cannot close a duplicate meanwhile
            for c in self._conns.values():
                if c.deadline is not None and c.deadline < now:
                    c.deadline = None
                    try:
                        c.dup.shutdown(socket.SHUT_RDWR)
                        if not c.kept_alive:
                            self.refuse("deadline")
                    except OSError:
                        pass  # the peer is gone already

    def refuse(self, reason: str) -> None:
        with self._refusals_lock:
            self._refusals[reason] += 1

    def refusals(self) -> dict[str, int]:
        """Connections and requests turned away so far, by reason (REFUSALS)."""
        with self._refusals_lock:
            return dict(self._refusals)

    def render_slot(self) -> bool:
        """From a handler: take one of the `max_scrapes` render slots, waiting up to
        `scrape_wait`; on success the response deadline starts again."""
        if not self.scrape_slots.acquire(timeout=self.scrape_wait):
            return False
        self.deadline(self.response_timeout)
        return True

    @property
    def connections(self) -> int:
        with self._conns_lock:
            return len(self._conns)

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        t.start()
        return t


class _Handler(Handler):
    server: MetricsServer

    heads = 0  # request heads read on this connection

    def reading(self) -> None:
        if self.heads:  # the first head's deadline runs from accept (TLS handshake included)
            self.server.deadline(self.server.head_timeout, kept_alive=True)

    def responding(self) -> None:
        self.heads += 1
        self.server.deadline(self.server.response_timeout)

    def get(self, req: Request) -> None:
        if req.path == "/healthz":
            ok = self.server.healthy()
            self.respond(200 if ok else 503, b"ok\n" if ok else b"no recent sample\n")
        elif req.path == "/metrics":
            if not self._authorised(req):
                self.server.refuse("unauthorized")
                self.respond(401, b"bearer token required\n",
                             {"Content-Type": "text/plain; charset=utf-8",
                              "WWW-Authenticate": 'Bearer realm="runqscale"'})
                return
            if not self.server.render_slot():
                self.server.refuse("scrape_limit")
                self.respond(503, b"too many scrapes at once\n",
                             {"Content-Type": "text/plain; charset=utf-8", "Retry-After": "1"})
                return
            try:
                self._metrics(req)
            finally:
                self.server.scrape_slots.release()
        else:
            self.respond(404, b"try /metrics or /healthz\n")

    def _metrics(self, req: Request) -> None:
        t0 = time.perf_counter()
        chunks = iter_chunks(self.server.registry.collect())
        # The collectors run for the first piece, before the status line: a collector that
        # fails fails the request, it does not send a 200 and a truncated body.
        first = next(chunks, b"")
        # Chunked: the body is written as it is rendered, never held whole (megabytes at
        # hundreds of containers); a scrape cut off mid-way is an incomplete body to
        # Prometheus, never a silently short one.
        headers = {"Content-Type": CONTENT_TYPE, "Transfer-Encoding": "chunked"}
        body: Iterable[bytes] = itertools.chain((first,), chunks)
        if self.server.gzip:
            headers["Vary"] = "Accept-Encoding"  # for caches between the two
            if accepts_gzip(req.header("accept-encoding")):
                headers["Content-Encoding"] = "gzip"
                body = gzipped(body)
        self.start(200, headers)
        self.write_chunks(body)
        if self.server.on_scrape:
            self.server.on_scrape(time.perf_counter() - t0)

    def _authorised(self, req: Request) -> bool:
        tf = self.server.token
        if tf is None:
            return True
        got = req.header("authorization")
        if not got.startswith("Bearer "):
            return False
        try:
            want = tf.token()
        except (OSError, ValueError):
            return False  # token file unreadable: deny rather than open up
        import hmac  # only with a token configured: hashlib's setup is ~0.1 MB

        return hmac.compare_digest(got[7:].strip().encode(), want.encode())


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110, 12.5.3): gzip's own weight if
    it is listed, else that of `*`; a weight of 0 refuses it. Prometheus sends `gzip`."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                q = _q(value.strip())
        if coding:
            weights[coding.lower()] = q
    q = weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0)))
    return q > 0


def _q(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0  # a malformed weight does not turn the coding off


def gzipped(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The pieces as one gzip stream, compressed as they come (the body is never held whole).
    Level 1, the cheapest: at 500 containers it turns a 5.7 MB body into ~0.3 MB and adds 10-15
    ms to a scrape's 30 ms of CPU (stop 39: the agent's CPU 1.14x [1.10, 1.19] at a scrape every
    15 s), which is why the agent serves it only with --gzip."""
    z = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 16 + 15: a gzip header and trailer
    for piece in pieces:
        out = z.compress(piece)
        if out:
            yield out
    yield z.flush()


def tls_context(cert: str, key: str) -> Any:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx
