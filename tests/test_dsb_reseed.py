"""Every DeathStarBench benchmark run starts from the same data (Cluster.reseed): the posts
earlier runs composed, and what they cached, are gone; the seeded users, follows and posts
are back. Real redis and memcached."""

from __future__ import annotations

import asyncio

import pytest
from conftest import require_root
from k8s_helpers import REPO

from runqscale.deathstarbench.emulation.cluster import Cluster, ClusterConfig, need_binaries
from runqscale.deathstarbench.emulation.socialgraph import load_edges
from runqscale.deathstarbench.emulation.storeclient import Memcached, Redis
from runqscale.probes.cgroupfs import CgroupMounts

REED98 = REPO / "data/deathstarbench/socfb-Reed98.edges"

pytestmark = [pytest.mark.kernel, pytest.mark.services]


async def _state(ports: dict[str, int]) -> tuple[int, int, bytes | None, bytes | None]:
    posts = Redis("127.0.0.1", ports["post-storage-mongodb"])
    home = Redis("127.0.0.1", ports["home-timeline-redis"])
    cache = Memcached("127.0.0.1", ports["post-storage-memcached"])
    try:
        n_posts = await posts.call("DBSIZE")
        n_home = await home.call("ZCARD", "ht:0")
        doc = await posts.call("GET", "post:999999")
        cached = (await cache.get_multi(["post:999999"])).get("post:999999")
        return n_posts, n_home, doc, cached  # type: ignore[return-value]
    finally:
        for c in (posts, home, cache):
            c._drop()


async def _compose(ports: dict[str, int]) -> None:
    """What a run's compose-post leaves behind: a post, its fan-out, its cache entry."""
    posts = Redis("127.0.0.1", ports["post-storage-mongodb"])
    home = Redis("127.0.0.1", ports["home-timeline-redis"])
    cache = Memcached("127.0.0.1", ports["post-storage-memcached"])
    try:
        await posts.call("SET", "post:999999", "{}")
        await home.call("ZADD", "ht:0", 9e15, 999999)
        await cache.set_multi({"post:999999": b"{}"})
        await asyncio.sleep(0.05)  # set_multi is noreply
    finally:
        for c in (posts, home, cache):
            c._drop()


def test_reseed_restores_the_seeded_data_and_empties_the_caches() -> None:
    require_root()
    missing = need_binaries()
    assert not missing, missing
    mounts = CgroupMounts.read()
    hier = mounts.choose("auto")[0]
    with Cluster(hier, mounts, ClusterConfig(cpu=0.1), load_edges(str(REED98)),
                 name="runqscale-reseed") as c:
        seeded = asyncio.run(_state(c.store_ports))
        assert seeded[0] > 0 and seeded[2] is None and seeded[3] is None
        asyncio.run(_compose(c.store_ports))
        dirty = asyncio.run(_state(c.store_ports))
        assert dirty == (seeded[0] + 1, seeded[1] + 1, b"{}", b"{}")
        counts = c.reseed()
        assert counts["users"] == load_edges(str(REED98)).users
        assert asyncio.run(_state(c.store_ports)) == seeded
