"""Small asyncio clients for the real stores the emulated services use: redis (RESP2) and
memcached (text protocol). Only the commands the services issue; one persistent connection per
client, requests pipelined in order (each call waits for its own replies, calls are serialised
by a lock), reconnect on a broken connection.

No client library: each service replica is a guest process measured by the probe, and these
two protocols are a few lines each; redis-py and pymemcache would add milliseconds of import
and per-call overhead to every hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


class StoreError(RuntimeError):
    """A store answered with an error, or the connection failed."""


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        return self.reader, self.writer

    def _drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _resp_command(args: Sequence[bytes | str | int | float]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


async def _resp_reply(r: asyncio.StreamReader) -> object:
    line = await r.readline()
    if not line:
        raise StoreError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return StoreError(f"redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = await r.readexactly(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [await _resp_reply(r) for _ in range(n)]
    raise StoreError(f"redis: unexpected reply {line[:40]!r}")


class Redis(_Conn):
    async def pipeline(self, commands: Sequence[Sequence[bytes | str | int | float]]) -> list:
        """Send every command in one write; return their replies in order."""
        if not commands:
            return []
        async with self.lock:
            for attempt in (0, 1):
                try:
                    r, w = await self._ensure()
                    w.write(b"".join(_resp_command(c) for c in commands))
                    await w.drain()
                    out = [await _resp_reply(r) for _ in commands]
                    break
                except (OSError, asyncio.IncompleteReadError, StoreError) as e:
                    self._drop()
                    if attempt:
                        raise StoreError(f"redis {self.host}:{self.port}: {e}") from e
        for x in out:
            if isinstance(x, StoreError):
                raise x
        return out

    async def call(self, *args: bytes | str | int | float) -> object:
        return (await self.pipeline([args]))[0]


class Memcached(_Conn):
    async def get_multi(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        async with self.lock:
            for attempt in (0, 1):
                try:
                    r, w = await self._ensure()
                    w.write(b"get " + " ".join(keys).encode() + b"\r\n")
                    await w.drain()
                    out: dict[str, bytes] = {}
                    while True:
                        line = await r.readline()
                        if line == b"END\r\n":
                            return out
                        if not line.startswith(b"VALUE "):
                            raise StoreError(f"memcached: unexpected {line[:40]!r}")
                        _, key, _flags, n = line.split()[:4]
                        out[key.decode()] = (await r.readexactly(int(n) + 2))[:-2]
                except (OSError, asyncio.IncompleteReadError, StoreError) as e:
                    self._drop()
                    if attempt:
                        raise StoreError(f"memcached {self.host}:{self.port}: {e}") from e
        raise AssertionError("unreachable")

    async def flush_all(self) -> None:
        """Drop every item (the benchmark's reseed between runs)."""
        async with self.lock:
            try:
                r, w = await self._ensure()
                w.write(b"flush_all\r\n")
                await w.drain()
                line = await r.readline()
            except OSError as e:
                self._drop()
                raise StoreError(f"memcached {self.host}:{self.port}: {e}") from e
            if line != b"OK\r\n":
                raise StoreError(f"memcached: flush_all answered {line[:40]!r}")

    async def set_multi(self, items: dict[str, bytes], expire_s: int = 0) -> None:
        """`set` each item with `noreply`, in one write (as DSB's services fire and forget)."""
        if not items:
            return
        async with self.lock:
            try:
                _, w = await self._ensure()
                w.write(b"".join(b"set %s 0 %d %d noreply\r\n%s\r\n"
                                 % (k.encode(), expire_s, len(v), v) for k, v in items.items()))
                await w.drain()
            except OSError as e:
                self._drop()
                raise StoreError(f"memcached {self.host}:{self.port}: {e}") from e
