"""The HTTP/1.1 subset the agent speaks: it serves GETs (/metrics, /healthz) and makes GETs
(the kubelet's pods, the API server's list and watch), nothing else.

The standard library's http.server and http.client would do it, but importing them (with
mimetypes, shutil and the email package, which only parses their headers) costs the agent
~2.1 MB of RSS on every node on top of everything else it imports (http.client 1.1 MB, mostly
the email package; http.server 1.0 MB more; docs/bench/HISTORY.md, stop 43), for features
neither side uses.

Serving (`Handler`): scrapers send a request line and a few headers and read a response:

- a request line `METHOD TARGET HTTP/1.x` of at most `MAX_LINE` bytes (else 414), headers of at
  most `MAX_HEADERS` lines (else 431), no obsolete line folding (400);
- GET only: any other method gets 405 (without a body for HEAD) and its connection closed. A
  request announcing a body (`Content-Length` other than 0, or `Transfer-Encoding`) is answered
  and its connection closed: its body is never read, so the next request could not be found;
- HTTP/1.1 keeps the connection open unless the client sends `Connection: close`. An HTTP/1.0
  request is answered without chunked framing (its body ends with the connection) and closes;
- a connection idle or stalled past the socket timeout the server sets is closed. That timeout
  is per read or write; a whole request head, or a whole response, has a deadline only where a
  server enforces one through the `reading` and `responding` hooks (exporter/server.py does).

Fetching (`get`): one GET per connection (`Connection: close`), over TLS when the caller gives
a context; the body is read as the response frames it (chunked, Content-Length, or up to the
close), in pieces of at most 64 KiB, so a watch's events arrive as they are sent.
"""

from __future__ import annotations

import socket
import socketserver
from collections.abc import Iterable
from typing import Any, BinaryIO

MAX_LINE = 8192  # what nginx allows per request line and header line by default
MAX_HEADERS = 100  # http.client's limit
PIECE = 65536  # the most a client read takes from the socket at once
MAX_EMPTY_LINES = 4  # skipped before a request line (a client's stray CRLF after a body)
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 414: "URI Too Long",
           431: "Request Header Fields Too Large", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}


class BadRequest(ValueError):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class Request:
    """One parsed request: method, target (path and query), version, headers by lower-case name
    (every value of a repeated header kept, in order)."""

    def __init__(self, method: str, target: str, version: str,
                 headers: dict[str, list[str]]) -> None:
        self.method, self.target, self.version, self.headers = method, target, version, headers

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str:
        """The header's values joined as one list (RFC 9110, 5.3); "" when absent."""
        return ", ".join(self.headers.get(name, ()))

    def keeps_alive(self) -> bool:
        """HTTP/1.1 without `Connection: close` (HTTP/1.0 connections always close here)."""
        tokens = {t.strip().lower() for t in self.header("connection").split(",")}
        return self.version == "HTTP/1.1" and "close" not in tokens

    def has_body(self) -> bool:
        return "transfer-encoding" in self.headers or \
            self.header("content-length").strip() not in ("", "0")


def _line(rfile: BinaryIO, limit: int, code: int) -> bytes:
    line = rfile.readline(limit + 1)
    if len(line) > limit:
        raise BadRequest(code, "line too long")
    return line


def read_request(rfile: BinaryIO) -> Request | None:
    """The next request on the connection; None when the client closed it between requests."""
    raw = _line(rfile, MAX_LINE, 414)
    for _ in range(MAX_EMPTY_LINES):  # RFC 9112, 2.2: ignore empty lines before a request
        if raw not in (b"\r\n", b"\n"):
            break
        raw = _line(rfile, MAX_LINE, 414)
    if not raw:
        return None
    parts = raw.decode("latin-1").split()
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505 if version.startswith("HTTP/") else 400, "unsupported version")
    return Request(method, target, version, read_headers(rfile))


def read_headers(rfile: BinaryIO) -> dict[str, list[str]]:
    """Header lines up to the empty one, by lower-case name."""
    headers: dict[str, list[str]] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(rfile, MAX_LINE, 431)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise BadRequest(400, "connection closed inside the headers")
        if line[:1] in (b" ", b"\t"):
            raise BadRequest(400, "obsolete header line folding")
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        headers.setdefault(name.lower(), []).append(value.strip())
    raise BadRequest(431, "too many header lines")


def response_head(code: int, headers: dict[str, str]) -> bytes:
    """A response's status line and headers, up to the empty line."""
    lines = [f"HTTP/1.1 {code} {REASONS.get(code, 'Unknown')}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def whole_response(code: int, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete response with `body` that closes its connection (Content-Length framed)."""
    return response_head(code, {**headers, "Content-Length": str(len(body)),
                                "Connection": "close"}) + body


class Handler(socketserver.StreamRequestHandler):
    """Serves requests on one connection until either side closes it; subclasses implement
    `get(request)` and answer with `respond`, or with `start` and `write_chunks`."""

    keep = False  # whether the connection stays open after this response
    framed = True  # whether the client reads chunked framing (HTTP/1.1)
    bodiless = False  # a HEAD request: headers only

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except OSError:
            pass  # the peer went away, or its connection timed out: nothing left to answer

    def reading(self) -> None:
        """Called before waiting for a request head (a server may start a deadline here)."""

    def responding(self) -> None:
        """Called once a request head has arrived, before it is answered."""

    def _one(self) -> bool:
        self.reading()
        try:
            req = read_request(self.rfile)
            self.responding()
        except BadRequest as e:
            self.responding()
            self.keep, self.framed, self.bodiless = False, True, False
            self.respond(e.code, f"{e}\n".encode())
            return False
        if req is None:
            return False
        self.framed, self.bodiless = req.version == "HTTP/1.1", req.method == "HEAD"
        self.keep = req.method == "GET" and req.keeps_alive() and not req.has_body()
        if req.method != "GET":
            self.respond(405, b"only GET is served\n", {"Allow": "GET"})
        else:
            self.get(req)
        return self.keep

    def get(self, req: Request) -> None:
        raise NotImplementedError

    def start(self, code: int, headers: dict[str, str]) -> None:
        """The status line and headers (plus `Connection: close` when this response ends the
        connection; an HTTP/1.0 client gets no chunked framing: the close ends its body)."""
        self.wfile.write(response_head(code, {
            **{k: v for k, v in headers.items()
               if self.framed or k.lower() != "transfer-encoding"},
            **({} if self.keep else {"Connection": "close"})}))

    def respond(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.start(code, {**(headers or {"Content-Type": "text/plain; charset=utf-8"}),
                          "Content-Length": str(len(body))})
        if not self.bodiless:
            self.wfile.write(body)

    def write_chunks(self, pieces: Iterable[bytes]) -> None:
        """A chunked body (the response's headers said `Transfer-Encoding: chunked`); to an
        HTTP/1.0 client the pieces as they are."""
        for piece in pieces:
            if piece:
                self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece) if self.framed
                                 else piece)
        if self.framed:
            self.wfile.write(b"0\r\n\r\n")


# -- the client side ------------------------------------------------------------------------------

class Response:
    """A GET's response: status, reason, headers, and its body as a file (read, readline);
    closing it closes the connection."""

    def __init__(self, sock: socket.socket, rfile: BinaryIO, status: int, reason: str,
                 headers: dict[str, list[str]]) -> None:
        self._sock, self._rfile = sock, rfile
        self.status, self.reason, self.headers = status, reason, headers
        coding = ", ".join(headers.get("transfer-encoding", ())).lower()
        length = ", ".join(headers.get("content-length", ())).strip()
        self._chunked = coding.endswith("chunked")
        if coding and not self._chunked:
            raise ValueError(f"unsupported Transfer-Encoding {coding!r}")
        self._left: int | None = None  # bytes left of the body (None: up to the close)
        if not self._chunked and length:
            if not length.isdigit():
                raise ValueError(f"malformed Content-Length {length!r}")
            self._left = int(length)
        self._buf, self._pos, self._eof = bytearray(), 0, False  # unread: _buf[_pos:]
        self._chunk_left = 0  # bytes of the current chunk not read yet

    def _piece(self) -> bytes:
        """The next piece of the body as framed on the wire; b"" at its end."""
        if self._eof:
            return b""
        if self._chunked and self._chunk_left:
            data = self._exactly(min(self._chunk_left, PIECE))
            self._chunk_left -= len(data)
            if not self._chunk_left and self._rfile.readline(3) not in (b"\r\n", b"\n"):
                raise ValueError("chunk not followed by CRLF")
            return data
        if self._chunked:
            size_line = _line(self._rfile, MAX_LINE, 400)
            size = size_line.split(b";", 1)[0].strip()
            if not size or any(c not in b"0123456789abcdefABCDEF" for c in size):
                raise ValueError(f"malformed chunk size line {size_line[:40]!r}")
            n = int(size, 16)
            if n == 0:
                read_headers(self._rfile)  # trailers, up to the empty line
                self._eof = True
                return b""
            self._chunk_left = n  # read in pieces: a declared size is not an allocation
            return self._piece()
        if self._left is not None:
            data = self._exactly(min(self._left, PIECE)) if self._left else b""
            self._left -= len(data)
        else:
            data = self._rfile.read1(PIECE)
        self._eof = not data
        return data

    def _exactly(self, n: int) -> bytes:
        data = self._rfile.read(n)
        if len(data) < n:
            raise ConnectionError("connection closed inside the response body")
        return data

    def _take(self, end: int) -> bytes:
        """The unread buffer up to `end`; the consumed front is dropped once it is most of it."""
        out = bytes(self._buf[self._pos:end])
        self._pos = end
        if self._pos > PIECE and self._pos * 2 > len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0
        return out

    def read(self, n: int | None = None) -> bytes:
        """Up to n bytes of the body (all that is left when n is None or negative)."""
        if n is None or n < 0:
            parts = [bytes(self._buf[self._pos:])]
            while piece := self._piece():
                parts.append(piece)
            self._buf, self._pos = bytearray(), 0
            return b"".join(parts)
        while len(self._buf) - self._pos < n and (piece := self._piece()):
            self._buf += piece
        return self._take(min(len(self._buf), self._pos + n))

    def readline(self) -> bytes:
        """The body's next line, with its newline (b"" at the end of the body)."""
        scan = self._pos  # where the search for a newline resumes: no byte is searched twice
        while (i := self._buf.find(b"\n", scan)) < 0:
            scan = len(self._buf)
            piece = self._piece()
            if not piece:
                return self._take(len(self._buf))
            self._buf += piece
        return self._take(i + 1)

    def close(self) -> None:
        self._rfile.close()
        self._sock.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(host: str, port: int, target: str, headers: dict[str, str], timeout: float,
        tls: Any = None) -> Response:
    """GET `target` from host:port (through `tls`, an ssl.SSLContext, when given), one request
    on its own connection; the response as soon as its headers are in."""
    bad = [t for t in (*headers.keys(), *headers.values()) if any(c in t for c in "\r\n\0")]
    if any(c in target for c in " \r\n\0") or bad:
        raise ValueError(f"refusing to send {(bad or [target])[0][:40]!r}: a space in the "
                         "request target, or CR, LF or NUL anywhere, would corrupt the request")
    # An ASCII name goes to the resolver and to ssl as bytes: given a str, both run it through
    # the idna codec, whose modules (encodings.idna, stringprep, unicodedata) take ~0.2 MB in
    # a bare import and are of no use to the agent. A non-ASCII name still needs the codec.
    wire_host: str | bytes = host.encode("ascii") if host.isascii() else host
    sock = socket.create_connection((wire_host, port), timeout=timeout)
    rfile: BinaryIO | None = None
    try:
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=wire_host)
        name = f"[{host}]" if ":" in host else host
        head = [f"GET {target} HTTP/1.1", f"Host: {name}:{port}", "Connection: close",
                "Accept-Encoding: identity", *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        rfile = sock.makefile("rb")
        status_line = _line(rfile, MAX_LINE, 400).decode("latin-1").rstrip("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit() or len(code) != 3:
            raise ValueError(f"not an HTTP/1.x response: {status_line[:60]!r}")
        return Response(sock, rfile, int(code), reason, read_headers(rfile))
    except BaseException:
        if rfile is not None:
            rfile.close()  # it holds a reference to the socket: both must close to free it
        sock.close()
        raise
