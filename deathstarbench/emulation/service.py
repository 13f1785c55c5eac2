"""One replica of one emulated social-network service (a process; the local actuator puts each
replica in its own cgroup).

    python -m runqscale.deathstarbench.emulation.service --service text-service \
        --port 9101 --topology topology.json [--replica text-service-0]

Each handler does what DeathStarBench's C++ handler does (callgraph.py has the structure), with
real work: text is parsed with regular expressions, ids are built snowflake-style, posts are
JSON documents, stores are real redis and memcached processes. Calls inside one stage run in
parallel (asyncio.gather, as DSB's std::async). Stores: DSB's MongoDB collections are redis
instances with append-only persistence here (documents as JSON strings, a user's timeline as a
sorted set): see the README for what that changes.

`topology.json`: {"services": {"<logic service>": <mesh port>}, "stores": {"<store>": <port>}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import string
import sys
import time
from collections.abc import Awaitable, Callable

from runqscale.deathstarbench.emulation.rpc import Client, serve
from runqscale.deathstarbench.emulation.storeclient import Memcached, Redis

URL_RE = re.compile(r"https?://[^\s]+")
MENTION_RE = re.compile(r"@[A-Za-z0-9_]+")
SHORT_PREFIX = "http://short-url/"


class Ctx:
    """What a handler reaches: other services (through the mesh) and its stores."""

    def __init__(self, topology: dict, replica: str) -> None:
        self.replica = replica
        self._services = {k: Client(int(v)) for k, v in topology.get("services", {}).items()}
        self._stores = topology.get("stores", {})
        self._store_conns: dict[str, Redis | Memcached] = {}
        self.counter = 0
        self.machine_id = abs(hash(replica)) % 1024

    def svc(self, name: str) -> Client:
        return self._services[name]

    def redis(self, name: str) -> Redis:
        c = self._store_conns.get(name)
        if c is None:
            c = self._store_conns[name] = Redis("127.0.0.1", int(self._stores[name]))
        assert isinstance(c, Redis)
        return c

    def memcached(self, name: str) -> Memcached:
        c = self._store_conns.get(name)
        if c is None:
            c = self._store_conns[name] = Memcached("127.0.0.1", int(self._stores[name]))
        assert isinstance(c, Memcached)
        return c


def _ids(raw: list) -> list[int]:
    return [int(x) for x in raw]


# -- compose path ------------------------------------------------------------------------------

async def compose_post(c: Ctx, a: dict) -> object:
    text_res, unique, media, creator = await asyncio.gather(
        c.svc("text-service").call("ComposeText", {"text": a["text"]}),
        c.svc("unique-id-service").call("ComposeUniqueId", {"post_type": a.get("post_type", 0)}),
        c.svc("media-service").call("ComposeMedia", {"media_types": a.get("media_types", []),
                                                     "media_ids": a.get("media_ids", [])}),
        c.svc("user-service").call("ComposeCreatorWithUserId",
                                   {"user_id": a["user_id"], "username": a["username"]}),
    )
    ts = int(time.time() * 1000)
    post = {"post_id": unique, "creator": creator, "text": text_res["text"],
            "user_mentions": text_res["user_mentions"], "media": media, "urls": text_res["urls"],
            "timestamp": ts, "post_type": a.get("post_type", 0)}
    mention_ids = [m["user_id"] for m in text_res["user_mentions"]]
    await asyncio.gather(
        c.svc("post-storage-service").call("StorePost", {"post": post}),
        c.svc("user-timeline-service").call("WriteUserTimeline", {
            "post_id": unique, "user_id": a["user_id"], "timestamp": ts}),
        c.svc("home-timeline-service").call("WriteHomeTimeline", {
            "post_id": unique, "user_id": a["user_id"], "timestamp": ts,
            "user_mentions_id": mention_ids}),
    )
    return {"post_id": unique}


async def compose_text(c: Ctx, a: dict) -> object:
    text = a["text"]
    urls = URL_RE.findall(text)
    names = [m[1:] for m in MENTION_RE.findall(text)]
    shortened, mentions = await asyncio.gather(
        c.svc("url-shorten-service").call("ComposeUrls", {"urls": urls}),
        c.svc("user-mention-service").call("ComposeUserMentions", {"usernames": names}),
    )
    for u in shortened:
        text = text.replace(u["expanded_url"], u["shortened_url"])
    return {"text": text, "urls": shortened, "user_mentions": mentions}


async def compose_urls(c: Ctx, a: dict) -> object:
    alphabet = string.ascii_letters + string.digits
    out = [{"shortened_url": SHORT_PREFIX + "".join(random.choices(alphabet, k=10)),
            "expanded_url": u} for u in a["urls"]]
    if out:
        await c.redis("url-shorten-mongodb").pipeline(
            [("SET", "url:" + u["shortened_url"], u["expanded_url"]) for u in out])
    return out


async def compose_user_mentions(c: Ctx, a: dict) -> object:
    names = a["usernames"]
    if not names:
        return []
    cached = await c.memcached("user-memcached").get_multi([f"user:{n}" for n in names])
    found = {n: json.loads(cached[f"user:{n}"]) for n in names if f"user:{n}" in cached}
    missing = [n for n in names if n not in found]
    if missing:
        docs = await c.redis("user-mongodb").pipeline([("GET", f"user:{n}") for n in missing])
        for n, d in zip(missing, docs, strict=True):
            if d is not None:
                found[n] = json.loads(d)
    return [{"user_id": found[n]["user_id"], "username": n} for n in names if n in found]


async def compose_unique_id(c: Ctx, a: dict) -> object:
    # snowflake: 41 bits of milliseconds, 10 of machine, 12 of sequence (as DSB's UniqueId)
    c.counter = (c.counter + 1) & 0xFFF
    return (int(time.time() * 1000) - 1_514_764_800_000) << 22 | c.machine_id << 12 | c.counter


async def compose_media(c: Ctx, a: dict) -> object:
    return [{"media_id": int(i), "media_type": str(t)}
            for i, t in zip(a["media_ids"], a["media_types"], strict=False)]


async def compose_creator(c: Ctx, a: dict) -> object:
    return {"user_id": int(a["user_id"]), "username": str(a["username"])}


async def store_post(c: Ctx, a: dict) -> object:
    p = a["post"]
    await c.redis("post-storage-mongodb").call("SET", f"post:{p['post_id']}", json.dumps(p))
    return None


async def write_user_timeline(c: Ctx, a: dict) -> object:
    uid, pid, ts = int(a["user_id"]), int(a["post_id"]), int(a["timestamp"])
    # mongodb find_and_modify (push onto the user's document), then the redis copy
    await c.redis("user-timeline-mongodb").call("ZADD", f"ut:{uid}", ts, pid)
    await c.redis("user-timeline-redis").call("ZADD", f"ut:{uid}", ts, pid)
    return None


async def write_home_timeline(c: Ctx, a: dict) -> object:
    uid, pid, ts = int(a["user_id"]), int(a["post_id"]), int(a["timestamp"])
    followers = await c.svc("social-graph-service").call("GetFollowers", {"user_id": uid})
    targets = set(_ids(followers)) | set(_ids(a.get("user_mentions_id", [])))
    await c.redis("home-timeline-redis").pipeline(
        [("ZADD", f"ht:{t}", ts, pid) for t in sorted(targets)])
    return None


async def get_followers(c: Ctx, a: dict) -> object:
    uid = int(a["user_id"])
    ids = await c.redis("social-graph-redis").call("ZRANGE", f"followers:{uid}", 0, -1)
    if ids:
        return _ids(ids)
    doc = await c.redis("social-graph-mongodb").call("GET", f"followers:{uid}")
    followers = json.loads(doc) if doc else []
    if followers:  # refill the cache
        await c.redis("social-graph-redis").call(
            "ZADD", f"followers:{uid}", *[x for f in followers for x in (0, f)])
    return followers


# -- read paths --------------------------------------------------------------------------------

async def read_posts(c: Ctx, a: dict) -> object:
    ids = _ids(a["post_ids"])
    if not ids:
        return []
    keys = [f"post:{i}" for i in ids]
    cached = await c.memcached("post-storage-memcached").get_multi(keys)
    missing = [k for k in keys if k not in cached]
    if missing:
        docs = await c.redis("post-storage-mongodb").pipeline([("GET", k) for k in missing])
        back = {k: d for k, d in zip(missing, docs, strict=True) if d is not None}
        cached.update(back)
        await c.memcached("post-storage-memcached").set_multi(back)
    return [json.loads(cached[k]) for k in keys if k in cached]


async def read_home_timeline(c: Ctx, a: dict) -> object:
    uid, start, stop = int(a["user_id"]), int(a.get("start", 0)), int(a.get("stop", 10))
    ids = await c.redis("home-timeline-redis").call("ZREVRANGE", f"ht:{uid}", start, stop - 1)
    return await c.svc("post-storage-service").call("ReadPosts", {"post_ids": _ids(ids)})


async def read_user_timeline(c: Ctx, a: dict) -> object:
    uid, start, stop = int(a["user_id"]), int(a.get("start", 0)), int(a.get("stop", 10))
    key = f"ut:{uid}"
    ids = _ids(await c.redis("user-timeline-redis").call("ZREVRANGE", key, start, stop - 1))
    if len(ids) < stop - start:  # fewer cached than asked: the rest from mongodb, refill redis
        raw = await c.redis("user-timeline-mongodb").call(
            "ZREVRANGE", key, start, stop - 1, "WITHSCORES")
        pairs = [(int(raw[i + 1]), int(raw[i])) for i in range(0, len(raw or []), 2)]
        if pairs:
            posts, _ = await asyncio.gather(
                c.svc("post-storage-service").call("ReadPosts",
                                                   {"post_ids": [p for _, p in pairs]}),
                c.redis("user-timeline-redis").call(
                    "ZADD", key, *[x for ts, p in pairs for x in (ts, p)]))
            return posts
    return await c.svc("post-storage-service").call("ReadPosts", {"post_ids": ids})


HANDLERS: dict[str, dict[str, Callable[[Ctx, dict], Awaitable[object]]]] = {
    "compose-post-service": {"ComposePost": compose_post},
    "text-service": {"ComposeText": compose_text},
    "url-shorten-service": {"ComposeUrls": compose_urls},
    "user-mention-service": {"ComposeUserMentions": compose_user_mentions},
    "unique-id-service": {"ComposeUniqueId": compose_unique_id},
    "media-service": {"ComposeMedia": compose_media},
    "user-service": {"ComposeCreatorWithUserId": compose_creator},
    "post-storage-service": {"StorePost": store_post, "ReadPosts": read_posts},
    "user-timeline-service": {"WriteUserTimeline": write_user_timeline,
                              "ReadUserTimeline": read_user_timeline},
    "home-timeline-service": {"WriteHomeTimeline": write_home_timeline,
                              "ReadHomeTimeline": read_home_timeline},
    "social-graph-service": {"GetFollowers": get_followers},
}


async def _run(service: str, port: int, topology: dict, replica: str) -> None:
    ctx = Ctx(topology, replica)
    errors = 0

    def on_error(msg: str) -> None:
        nonlocal errors
        errors += 1
        if errors <= 5 or errors % 1000 == 0:  # a failing store must not flood stderr
            print(f"{replica}: error #{errors}: {msg}", file=sys.stderr, flush=True)

    handlers = {m: (lambda a, f=f: f(ctx, a)) for m, f in HANDLERS[service].items()}
    srv = await serve(handlers, port, on_error=on_error)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    srv.close()  # stop accepting; calls in flight finish (the actuator drained us from nginx)
    await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one replica of an emulated DSB service")
    ap.add_argument("--service", required=True, choices=sorted(HANDLERS))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topology", required=True, help="JSON file: mesh ports and store ports")
    ap.add_argument("--replica", default=None)
    a = ap.parse_args(argv)
    try:
        with open(a.topology) as f:
            topology = json.load(f)
    except (OSError, ValueError) as e:
        print(f"service: error: --topology {a.topology}: {e}", file=sys.stderr)
        return 2
    random.seed(os.getpid())
    asyncio.run(_run(a.service, a.port, topology, a.replica or f"{a.service}-{os.getpid()}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
