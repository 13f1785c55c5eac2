"""The emulation's parts against real servers: the store clients against Debian's redis-server
and memcached, the JSON-over-HTTP layer between two real processes' sockets, the mixed workload's
requests, the mesh nginx config (checked by nginx -t), and the placement rule (properties)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runqscale.deathstarbench.emulation import workload
from runqscale.deathstarbench.emulation.cluster import MEMCACHED_BIN, REDIS_BIN, need_binaries
from runqscale.deathstarbench.emulation.mesh import render
from runqscale.deathstarbench.emulation.rpc import Client, RpcError, serve
from runqscale.deathstarbench.emulation.storeclient import Memcached, Redis, StoreError
from runqscale.scaler.affinity import AffinityPair
from runqscale.scaler.model import WorkloadRef
from runqscale.validation.nginx import NGINX_BIN, free_port
from runqscale.validation.placement import place, satisfied


def _wait(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


@pytest.fixture(scope="module")
def stores():
    if need_binaries():
        pytest.skip(need_binaries())
    rp, mp = free_port(), free_port()
    d = tempfile.mkdtemp()
    procs = [subprocess.Popen([REDIS_BIN, "--port", str(rp), "--bind", "127.0.0.1", "--save", "",
                               "--dir", d, "--logfile", ""], stdout=subprocess.DEVNULL),
             subprocess.Popen([MEMCACHED_BIN, "-p", str(mp), "-l", "127.0.0.1", "-U", "0",
                               "-u", "root"])]
    _wait(rp)
    _wait(mp)
    yield rp, mp
    for p in procs:
        p.kill()
        p.wait()


@pytest.mark.services
def test_redis_client_pipelines_sorted_sets_and_errors(stores):
    rp, _ = stores

    async def go() -> None:
        r = Redis("127.0.0.1", rp)
        assert await r.pipeline([("ZADD", "t", 1, 10), ("ZADD", "t", 3, 30),
                                 ("ZADD", "t", 2, 20)]) == [1, 1, 1]
        assert await r.call("ZREVRANGE", "t", 0, 1) == [b"30", b"20"]
        assert await r.call("GET", "missing") is None
        await r.call("SET", "doc", '{"a": "ü"}')
        assert await r.call("GET", "doc") == '{"a": "ü"}'.encode()
        with pytest.raises(StoreError, match="WRONGTYPE"):
            await r.call("GET", "t")
        # the connection survives an error reply, and a server-side close is reconnected
        assert await r.call("ZCARD", "t") == 3
        await r.call("CLIENT", "KILL", "SKIPME", "no")
        assert await r.call("ZCARD", "t") == 3

    asyncio.run(go())


@pytest.mark.services
def test_memcached_client_get_multi_and_set_noreply(stores):
    _, mp = stores

    async def go() -> None:
        m = Memcached("127.0.0.1", mp)
        await m.set_multi({"a": b"1", "b": b"x" * 5000, "c": b"line\r\nbreak"})
        got = await m.get_multi(["a", "b", "c", "nope"])
        assert got == {"a": b"1", "b": b"x" * 5000, "c": b"line\r\nbreak"}
        assert await m.get_multi([]) == {}

    asyncio.run(go())


def test_rpc_server_and_client_keep_alive_errors_and_get_routes():
    port = free_port()

    async def echo(a: dict) -> object:
        if a.get("fail"):
            raise ValueError("asked to fail")
        return {"got": a}

    async def go() -> None:
        errors: list[str] = []
        srv = await serve({"Echo": echo}, port, on_error=errors.append)
        c = Client(port)
        for i in range(20):
            assert await c.call("Echo", {"i": i}) == {"got": {"i": i}}
        assert len(c._idle) == 1  # one connection reused for 20 sequential calls
        got = await asyncio.gather(*(c.call("Echo", {"i": i}) for i in range(10)))
        assert [g["got"]["i"] for g in got] == list(range(10))
        with pytest.raises(RpcError, match="HTTP 500"):
            await c.call("Echo", {"fail": True})
        assert errors and "asked to fail" in errors[0]
        with pytest.raises(RpcError, match="HTTP 404"):
            await c.call("Nope", {})
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /Echo?user_id=5&start=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await r.read(4096)
        assert b'{"got": {"user_id": "5", "start": "0"}}' in data
        w.close()
        srv.close()
        await srv.wait_closed()
        with pytest.raises(RpcError):
            await Client(port, timeout_s=1).call("Echo", {})

    asyncio.run(go())


def test_mixed_workload_requests_are_60_30_10_and_well_formed():
    reqs, kinds = workload.build(20_000, 962, "127.0.0.1", 8080, seed=3)
    share = Counter(workload.KINDS[k] for k in kinds)
    assert abs(share["read-home-timeline"] / 20_000 - 0.6) < 0.02
    assert abs(share["read-user-timeline"] / 20_000 - 0.3) < 0.02
    assert abs(share["compose-post"] / 20_000 - 0.1) < 0.01
    for r, k in zip(reqs[:500], kinds[:500], strict=True):
        head, _, body = r.partition(b"\r\n\r\n")
        assert workload.PATHS[workload.KINDS[k]].encode() in head.split(b"\r\n")[0]
        if workload.KINDS[k] == "compose-post":
            n = int(next(h for h in head.split(b"\r\n") if h.startswith(b"Content-Length"))
                    .split(b":")[1])
            assert n == len(body) and b'"user_id"' in body
    # the same seed gives the same requests (every policy replays the same ones)
    again, k2 = workload.build(20_000, 962, "127.0.0.1", 8080, seed=3)
    assert again == reqs and (k2 == kinds).all()


@pytest.mark.services
@pytest.mark.skipif(not os.path.exists(NGINX_BIN), reason="no nginx")
def test_mesh_config_is_accepted_by_nginx():
    d = tempfile.mkdtemp()
    os.makedirs(os.path.join(d, "tmp"))
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(render(d, 18080, {"text-service": 18081, "home-timeline-service": 18082,
                                  "user-timeline-service": 18083,
                                  "compose-post-service": 18084},
                       {"text-service": [1234, 1235]}))
    res = subprocess.run([NGINX_BIN, "-t", "-q", "-p", d, "-c", conf], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr


def _pair(a: str, b: str, kind: str) -> AffinityPair:
    return AffinityPair(WorkloadRef("ns", a), WorkloadRef("ns", b), 0.9 if kind == "spread"
                        else -0.9, 30, kind)  # type: ignore[arg-type]


def test_placement_follows_hints_when_they_cost_little():
    load = {"a": 1.0, "b": 1.0, "c": 0.2, "d": 0.2}
    default = place(load, ["0", "1"])
    assert default["a"] != default["b"]  # spreading by load
    hints = [_pair("a", "c", "co-locate"), _pair("c", "d", "spread")]
    p = place(load, ["0", "1"], hints)
    assert p["a"] == p["c"] and p["c"] != p["d"]
    assert satisfied(p, hints) == (2, 2)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.floats(0, 5), min_size=1),
       st.lists(st.tuples(st.sampled_from("abcdefgh"), st.sampled_from("abcdefgh"),
                          st.sampled_from(["spread", "co-locate"])), max_size=10))
def test_placement_properties(load, raw):
    hints = [_pair(a, b, k) for a, b, k in raw if a != b]
    p = place(load, ["0", "1"], hints)
    assert set(p) == set(load) and set(p.values()) <= {"0", "1"}
    assert p == place(load, ["0", "1"], hints)  # deterministic
    if not hints:  # without hints: no node carries more than the other plus the largest item
        on = {n: sum(v for s, v in load.items() if p[s] == n) for n in ("0", "1")}
        assert abs(on["0"] - on["1"]) <= max(load.values()) + 1e-9
