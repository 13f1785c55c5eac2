"""Open-loop load generator (a separate process): requests leave on schedule whatever the latency.

Each request's send time is fixed in advance (a schedule of offsets); the sender never waits for
answers, so an overloaded service cannot slow the arrivals down and hide its own overload
(coordinated omission). Response time is measured from the *scheduled* send time; a send that
leaves late (this process was starved) is still sent, and counted as late. Failed requests
(connection errors, non-2xx, the program not running) and timed-out ones are counted, not dropped.

Raw asyncio streams, one connection per request (`Connection: close`): a few hundred requests/s
cost little CPU. Progress goes to stdout as one JSON line per second; the per-request records go
to an `.npz` file at the end:

    python -m runqscale.validation.loadgen --url http://127.0.0.1:8080 --schedule s.npy \
        --out records.npz [--timeout 10] [--source CODE]
    python -m runqscale.validation.loadgen --url ... --closed 8 --seconds 10   # capacity
    python -m runqscale.validation.loadgen --app deathstarbench --url FRONT --schedule s.npy \
        --out records.npz                 # DeathStarBench's mixed workload (60/30/10)

Exit status 0 when the schedule was played (whatever the service answered), 2 on bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from runqscale.validation.runlang_service import DEFAULT_SOURCE

TIMEOUT = -1  # `code` of a request that got no answer within the timeout
CONN_ERROR = -2  # ... that could not connect or lost the connection


def build_request(host: str, port: int, source: str) -> bytes:
    body = json.dumps({"language": "python", "source": source}).encode()
    head = (f"POST /api/run HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def parse_response(data: bytes) -> tuple[int, bool]:
    """(HTTP status, ran ok) from a whole response; status 0 if unparsable."""
    try:
        status = int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, False
    ok = 200 <= status < 300 and b'"ok": true' in data
    return status, ok


def parse_status(data: bytes) -> tuple[int, bool]:
    """(HTTP status, 2xx) from a whole response; status 0 if unparsable."""
    try:
        status = int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, False
    return status, 200 <= status < 300


@dataclass
class Records:
    scheduled: np.ndarray
    latency: np.ndarray
    late: np.ndarray
    code: np.ndarray
    ok: np.ndarray
    kind: np.ndarray | None = None  # request type per request (the app's index), if mixed

    @classmethod
    def load(cls, path: str) -> Records:
        with np.load(path) as z:
            return cls(z["scheduled"], z["latency"], z["late"], z["code"], z["ok"],
                       z["kind"] if "kind" in z else None)

    def save(self, path: str) -> None:
        extra = {} if self.kind is None else {"kind": self.kind}
        np.savez(path, scheduled=self.scheduled, latency=self.latency, late=self.late,
                 code=self.code, ok=self.ok, **extra)


class OpenLoop:
    """`requests`: one raw request per scheduled send (a mixed workload), else every send is
    the runlang request for `source`; `kinds` are recorded with the results."""

    def __init__(self, url: str, sched: np.ndarray, timeout_s: float, source: str,
                 late_threshold_s: float = 0.010, requests: list[bytes] | None = None,
                 kinds: np.ndarray | None = None) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.sched = np.asarray(sched, dtype=np.float64)
        n = self.sched.size
        self.timeout_s = timeout_s
        self.request = build_request(self.host, self.port, source)
        self.requests, self.kinds = requests, kinds
        # runlang answers 200 with "ok": false when the program failed; other apps: 2xx is ok
        self.parse = parse_response if requests is None else parse_status
        self.latency = np.full(n, np.nan)
        self.late = np.zeros(n)
        self.code = np.zeros(n, dtype=np.int32)
        self.ok = np.zeros(n, dtype=bool)
        self.late_threshold_s = late_threshold_s
        self.sent = self.done = self.n_ok = self.n_late = self.n_timeout = 0

    async def _one(self, i: int, t_sched: float, loop: asyncio.AbstractEventLoop) -> None:
        writer = None
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(self.request if self.requests is None else self.requests[i])
                data = await reader.read(-1)
            status, ok = self.parse(data)
            self.code[i] = status
            self.ok[i] = ok
            self.latency[i] = loop.time() - t_sched
            self.n_ok += ok
        except TimeoutError:
            self.code[i] = TIMEOUT
            self.n_timeout += 1
        except OSError:
            self.code[i] = CONN_ERROR
        finally:
            self.done += 1
            if writer is not None:
                writer.close()

    async def _progress(self, start: float, loop: asyncio.AbstractEventLoop,
                        every_s: float) -> None:
        k = 1
        while True:
            await asyncio.sleep(max(0.0, start + k * every_s - loop.time()))
            _emit({"t": round(loop.time() - start, 3), "sent": self.sent, "done": self.done,
                   "ok": self.n_ok, "failed": self.done - self.n_ok, "timeouts": self.n_timeout,
                   "late": self.n_late, "inflight": self.sent - self.done})
            k += 1

    # the validation loop reads `sent` once per 1 s tick: a status once a second made each
    # tick's request rate the previous second's, and the first tick's 0 while the replicas
    # already served the load (stop 30: showar's first call read 0.73 cores at 0 req/s)
    async def run(self, progress_every_s: float = 0.1) -> Records:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task] = set()
        start = loop.time() + 0.05
        _emit({"start": time.time() + (start - loop.time())})  # the schedule's 0, unix seconds
        prog = asyncio.create_task(self._progress(start, loop, progress_every_s))
        for i, off in enumerate(self.sched):
            t_sched = start + float(off)
            delay = t_sched - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = loop.time() - t_sched
            self.late[i] = max(0.0, lag)
            self.n_late += lag > self.late_threshold_s
            self.sent += 1
            t = asyncio.create_task(self._one(i, t_sched, loop))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks))
        prog.cancel()
        return Records(self.sched, self.latency, self.late, self.code, self.ok, self.kinds)


async def closed_loop(url: str, workers: int, seconds: float, source: str,
                      warmup_s: float = 2.0, timeout_s: float = 10.0,
                      requests: list[bytes] | None = None) -> dict:
    """Capacity: `workers` clients each sending the next request as soon as one answers
    (`requests` in turn when given, else the runlang request for `source`)."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    reqs = requests or [build_request(host, port, source)]
    parse = parse_response if requests is None else parse_status
    seq = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    measure_from, end = t0 + warmup_s, t0 + warmup_s + seconds
    lat: list[float] = []
    failed = 0

    async def worker() -> None:
        nonlocal failed, seq
        while loop.time() < end:
            ts = loop.time()
            ok = False
            writer = None
            req = reqs[seq % len(reqs)]
            seq += 1
            try:
                async with asyncio.timeout(timeout_s):
                    reader, writer = await asyncio.open_connection(host, port)
                    writer.write(req)
                    _, ok = parse(await reader.read(-1))
            except (TimeoutError, OSError):
                ok = False
            finally:
                if writer is not None:
                    writer.close()
            te = loop.time()
            if measure_from <= te < end:
                if ok:
                    lat.append(te - ts)
                else:
                    failed += 1
            if not ok:
                await asyncio.sleep(0.05)

    await asyncio.gather(*(worker() for _ in range(workers)))
    arr = np.asarray(lat)
    return {"rps": arr.size / seconds, "completed": int(arr.size), "failed": failed,
            "p50_seconds": float(np.median(arr)) if arr.size else None,
            "workers": workers, "seconds": seconds}


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _app_requests(a: argparse.Namespace, n: int) -> tuple[list[bytes], np.ndarray]:
    from runqscale.deathstarbench.emulation import workload  # only this app needs it

    u = urlsplit(a.url)
    return workload.build(n, a.users, u.hostname or "127.0.0.1", u.port or 80, a.seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="open-loop load generator for the runlang service")
    ap.add_argument("--url", required=True)
    ap.add_argument("--schedule", help=".npy of send offsets in seconds (increasing)")
    ap.add_argument("--out", help="write per-request records (.npz) here")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--source", default=DEFAULT_SOURCE)
    ap.add_argument("--closed", type=int, default=0, help="closed-loop workers (capacity mode)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--app", choices=("runlang", "deathstarbench"), default="runlang")
    ap.add_argument("--users", type=int, default=962, help="deathstarbench: users in the graph")
    ap.add_argument("--seed", type=int, default=0, help="deathstarbench: request draw seed")
    a = ap.parse_args(argv)
    _raise_nofile()
    if a.closed:
        reqs = _app_requests(a, 20_000)[0] if a.app != "runlang" else None
        _emit(asyncio.run(closed_loop(a.url, a.closed, a.seconds, a.source, requests=reqs)))
        return 0
    if not a.schedule or not a.out:
        print("loadgen: error: --schedule and --out are needed in open-loop mode",
              file=sys.stderr)
        return 2
    sched = np.load(a.schedule)
    if sched.ndim != 1 or (sched.size > 1 and np.any(np.diff(sched) < 0)):
        print(f"loadgen: error: {a.schedule}: schedule must be increasing offsets",
              file=sys.stderr)
        return 2
    requests, kinds = _app_requests(a, sched.size) if a.app != "runlang" else (None, None)
    t0 = time.monotonic()
    rec = asyncio.run(OpenLoop(a.url, sched, a.timeout, a.source, requests=requests,
                               kinds=kinds).run())
    rec.save(a.out)
    _emit({"end": True, "seconds": round(time.monotonic() - t0, 3), "sent": int(sched.size),
           "ok": int(rec.ok.sum()), "late": int((rec.late > 0.010).sum())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
