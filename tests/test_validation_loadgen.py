"""The open-loop generator keeps its schedule under overload: a deliberately slow server (one
request at a time, 0.3 s each) gets 40 req/s; every request still leaves on time, slow answers
are measured from the scheduled time, timeouts are counted as failures, none is dropped."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from runqscale.ports import free_port
from runqscale.validation.loadgen import CONN_ERROR, TIMEOUT, Records, parse_response

SLOW_SERVER = r"""
import asyncio, sys
lock = asyncio.Lock()
async def handle(r, w):
    try:
        head = await r.readuntil(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
        await r.readexactly(n)
        async with lock:  # one at a time: the service saturates at ~3 req/s
            await asyncio.sleep(0.3)
        body = b'{"ok": true}'
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(body), body))
        await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main())
"""


@pytest.fixture
def slow_server():
    port = free_port()
    p = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, str(port)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    yield f"http://127.0.0.1:{port}"
    p.kill()
    p.wait()


def test_parse_response() -> None:
    assert parse_response(b'HTTP/1.1 200 OK\r\n\r\n{"ok": true}') == (200, True)
    assert parse_response(b'HTTP/1.1 200 OK\r\n\r\n{"ok": false}') == (200, False)
    assert parse_response(b"HTTP/1.1 502 Bad Gateway\r\n\r\n") == (502, False)
    assert parse_response(b"") == (0, False)


def test_open_loop_keeps_schedule_under_overload(slow_server, tmp_path) -> None:
    sched = np.arange(80) / 40.0  # 40 req/s for 2 s against a 3 req/s service
    sp, out = tmp_path / "s.npy", tmp_path / "r.npz"
    np.save(sp, sched)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "runqscale.validation.loadgen", "--url", slow_server,
                        "--schedule", str(sp), "--out", str(out), "--timeout", "1.5"],
                       capture_output=True, text=True, timeout=60)
    wall = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    # closed-loop would need 80 × 0.3 s = 24 s; open-loop ends at 2 s + the 1.5 s timeout
    assert wall < 10, wall
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert "start" in lines[0] and lines[-1]["end"] and lines[-1]["sent"] == 80
    r = Records.load(str(out))
    assert r.scheduled.size == 80  # nothing dropped
    # every send left on schedule (within 50 ms, generously for a busy CI box)
    assert np.percentile(r.late, 95) < 0.05, r.late
    answered = r.ok & np.isfinite(r.latency)
    timed_out = r.code == TIMEOUT
    assert answered.sum() >= 3
    assert timed_out.sum() >= 60  # the queue grows: most wait past the timeout
    assert np.all(r.code[~answered] != 0)  # each failure has its reason
    assert set(np.unique(r.code[~answered])) <= {TIMEOUT, CONN_ERROR}
    # latency is measured from the schedule: answers queue up behind each other
    lat = r.latency[answered]
    assert lat.max() > 0.6 and np.all(lat < 1.6)
    assert answered.sum() + timed_out.sum() + (r.code == CONN_ERROR).sum() == 80


def test_bad_schedule_is_a_usage_error(tmp_path) -> None:
    sp = tmp_path / "s.npy"
    np.save(sp, np.array([1.0, 0.5]))
    p = subprocess.run([sys.executable, "-m", "runqscale.validation.loadgen", "--url",
                        "http://127.0.0.1:9", "--schedule", str(sp), "--out",
                        str(tmp_path / "r.npz")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "increasing" in p.stderr and p.stderr.count("\n") == 1
