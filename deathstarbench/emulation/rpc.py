"""JSON over HTTP/1.1 keep-alive between the emulated services (DeathStarBench uses Thrift over
TCP; the shape is the same: one persistent connection per caller, a request, a reply).

`serve(handlers, port)` answers `POST /<Method>` (JSON body) or `GET /<Method>?k=v` (the front
end's wrk2 routes) with the handler's JSON result, and `GET /healthz`; `Client(port)` calls a
service through its port on the mesh nginx (the emulation's
Kubernetes Service), keeping a small pool of idle connections. A reused connection that the
other side closed (nginx reloads when replicas change) is retried once on a fresh one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

Handler = Callable[[dict], Awaitable[object]]


class RpcError(RuntimeError):
    """A call that failed: connection error, timeout, or a non-200 answer."""


async def _read_message(r: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await r.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get(b"content-length", b"0"))
    body = await r.readexactly(n) if n else b""
    return lines[0], headers, body


def _response(status: int, body: bytes) -> bytes:
    reason = {200: b"OK", 404: b"Not Found", 500: b"Internal Server Error"}.get(status, b"Error")
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, reason, len(body), body))


async def serve(handlers: dict[str, Handler], port: int, host: str = "127.0.0.1",
                on_error: Callable[[str], None] | None = None) -> asyncio.base_events.Server:
    async def connection(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    start, _headers, body = await _read_message(r)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                parts = start.split(b" ")
                target = parts[1].decode() if len(parts) > 1 else "/"
                path, _, query = target.partition("?")
                if path == "/healthz":
                    w.write(_response(200, b'{"ok": true}'))
                    continue
                h = handlers.get(path.lstrip("/").rsplit("/", 1)[-1])
                if h is None:
                    w.write(_response(404, b'{"error": "no such method"}'))
                    continue
                try:
                    args = json.loads(body) if body else dict(parse_qsl(query))
                    result = await h(args)
                    w.write(_response(200, json.dumps(result).encode()))
                except Exception as e:  # noqa: BLE001 - one failed call answers 500, not a crash
                    if on_error:
                        on_error(f"{path}: {type(e).__name__}: {e}")
                    w.write(_response(500, json.dumps({"error": str(e)}).encode()))
        finally:
            w.close()

    return await asyncio.start_server(connection, host, port, backlog=1024)


class Client:
    """Calls `POST /<method>` on 127.0.0.1:`port` with a JSON body."""

    def __init__(self, port: int, timeout_s: float = 10.0, pool: int = 64) -> None:
        self.port, self.timeout_s, self.pool = port, timeout_s, pool
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._head = b"POST /%s HTTP/1.1\r\nHost: svc\r\nContent-Type: application/json\r\n"

    async def call(self, method: str, args: dict) -> object:
        body = json.dumps(args).encode()
        req = (self._head % method.encode()) + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        for attempt in (0, 1):
            fresh = not self._idle
            conn = self._idle.pop() if self._idle else None
            try:
                async with asyncio.timeout(self.timeout_s):
                    if conn is None:
                        conn = await asyncio.open_connection("127.0.0.1", self.port)
                    r, w = conn
                    w.write(req)
                    start, headers, data = await _read_message(r)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                if conn is not None:
                    conn[1].close()
                if fresh or attempt:
                    raise RpcError(f"{method} on :{self.port}: {type(e).__name__}: {e}") from e
                continue
            except TimeoutError as e:
                if conn is not None:
                    conn[1].close()
                raise RpcError(f"{method} on :{self.port}: timed out") from e
            if headers.get(b"connection", b"").lower() == b"close" or len(self._idle) >= self.pool:
                w.close()
            else:
                self._idle.append((r, w))
            status = int(start.split(b" ", 2)[1])
            if status != 200:
                raise RpcError(f"{method} on :{self.port}: HTTP {status} {data[:200]!r}")
            return json.loads(data)
        raise AssertionError("unreachable")
