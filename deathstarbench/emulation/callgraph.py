"""The social network's call graph, per request type, as data.

A request enters at `nginx-web-server` and becomes a tree of `Call`s. Each call runs its
`stages` in order; the calls inside one stage run in parallel (DeathStarBench's C++ services
issue them with `std::async` and wait for all). A call's `probability` is the chance it happens
at all (the mongodb read behind a cache miss); `repeat` is how many times it happens when it
does (`followers` = once per follower of the author, set from the social graph).

The three request types and their shares are those of DeathStarBench's mixed wrk2 workload
(`wrk2/scripts/social-network/mixed-workload.lua`): 60 % read home timeline, 30 % read user
timeline, 10 % compose post. Operation names are the Thrift methods (services) and the store
commands the services issue (stores). The structure of ComposePost, Read/WriteHomeTimeline and
Read/WriteUserTimeline was checked against DeathStarBench's handlers (ComposePostHandler.h,
HomeTimelineHandler.h, UserTimelineHandler.h, copies of unknown date in the local code index); the
insides of post-storage, text, url-shorten, user-mention and social-graph are as remembered.
Cache-miss ratios are emulation parameters, not DeathStarBench facts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

FRONTEND = "frontend"
LOGIC = "logic"
STORE = "store"

# repeat marker: once per follower of the post's author (fan-out on write)
FOLLOWERS = "followers"


@dataclass(frozen=True)
class Service:
    name: str
    kind: str  # frontend | logic | store
    store: str | None = None  # mongodb | redis | memcached for stores
    port: int = 9090


def _store(name: str) -> Service:
    kind = name.rsplit("-", 1)[1]
    return Service(name, STORE, kind, {"mongodb": 27017, "redis": 6379, "memcached": 11211}[kind])


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("nginx-web-server", FRONTEND, port=8080),
        *(Service(n, LOGIC) for n in (
            "compose-post-service", "text-service", "url-shorten-service",
            "user-mention-service", "unique-id-service", "media-service", "user-service",
            "post-storage-service", "user-timeline-service", "home-timeline-service",
            "social-graph-service",
        )),
        *(_store(n) for n in (
            "social-graph-mongodb", "social-graph-redis", "home-timeline-redis",
            "post-storage-mongodb", "post-storage-memcached", "user-timeline-mongodb",
            "user-timeline-redis", "url-shorten-mongodb", "url-shorten-memcached",
            "user-mongodb", "user-memcached", "media-mongodb", "media-memcached",
        )),
    )
}


@dataclass(frozen=True)
class Call:
    """`service` runs `operation`; then its `stages` in order, each stage's calls in parallel."""

    service: str
    operation: str
    stages: tuple[tuple[Call, ...], ...] = ()
    probability: float = 1.0
    repeat: int | str = 1  # a count, or FOLLOWERS

    def walk(self, parent: str | None = None) -> Iterator[tuple[str | None, Call]]:
        """(caller, call) for this call and every call below it, depth first."""
        yield parent, self
        for stage in self.stages:
            for c in stage:
                yield from c.walk(self.service)


@dataclass(frozen=True)
class RequestType:
    name: str
    path: str  # the front end's route (DeathStarBench's wrk2 API)
    share: float  # of all requests in the mixed workload
    root: Call

    def edges(self) -> list[tuple[str, str, str]]:
        """(caller, callee, operation) for every call below the front end."""
        return [(p, c.service, c.operation) for p, c in self.root.walk() if p is not None]


@dataclass(frozen=True)
class CacheRatios:
    """Emulation parameters: how often a cache read misses and falls through to mongodb."""

    post_storage_memcached_miss: float = 0.1
    user_timeline_redis_miss: float = 0.1
    social_graph_redis_miss: float = 0.1
    user_memcached_miss: float = 0.1


def _c(service: str, op: str, *stages: tuple[Call, ...], p: float = 1.0,
       repeat: int | str = 1) -> Call:
    return Call(service, op, tuple(stages), p, repeat)


def _read_posts(cache: CacheRatios) -> Call:
    """post-storage-service.ReadPosts: memcached multi-get, misses from mongodb, written back."""
    miss = cache.post_storage_memcached_miss
    return _c("post-storage-service", "ReadPosts",
              (_c("post-storage-memcached", "get_multi"),),
              (_c("post-storage-mongodb", "find", p=miss),),
              (_c("post-storage-memcached", "set", p=miss),))


def request_types(cache: CacheRatios | None = None) -> dict[str, RequestType]:
    """The three request types of the mixed workload, keyed by name."""
    cache = cache or CacheRatios()
    home = _c(
        "nginx-web-server", "GET /wrk2-api/home-timeline/read",
        (_c("home-timeline-service", "ReadHomeTimeline",
            (_c("home-timeline-redis", "ZREVRANGE"),),
            (_read_posts(cache),)),),
    )
    user_miss = cache.user_timeline_redis_miss
    user = _c(
        "nginx-web-server", "GET /wrk2-api/user-timeline/read",
        (_c("user-timeline-service", "ReadUserTimeline",
            (_c("user-timeline-redis", "ZREVRANGE"),),
            # fewer post ids in redis than asked: the rest from mongodb ...
            (_c("user-timeline-mongodb", "find", p=user_miss),),
            # ... then the posts are read while redis is refilled, in parallel
            (_read_posts(cache), _c("user-timeline-redis", "ZADD", p=user_miss))),),
    )
    sg_miss = cache.social_graph_redis_miss
    compose = _c(
        "nginx-web-server", "POST /wrk2-api/post/compose",
        (_c("compose-post-service", "ComposePost",
            # 1: the parts of the post, in parallel
            (
                _c("text-service", "ComposeText",
                   (_c("url-shorten-service", "ComposeUrls",
                       (_c("url-shorten-mongodb", "insert_many"),)),
                    _c("user-mention-service", "ComposeUserMentions",
                       (_c("user-memcached", "get_multi"),),
                       (_c("user-mongodb", "find", p=cache.user_memcached_miss),)))),
                _c("unique-id-service", "ComposeUniqueId"),
                _c("media-service", "ComposeMedia"),
                _c("user-service", "ComposeCreatorWithUserId"),
            ),
            # 2: store it and write the timelines, in parallel
            (
                _c("post-storage-service", "StorePost",
                   (_c("post-storage-mongodb", "insert_one"),)),
                _c("user-timeline-service", "WriteUserTimeline",
                   (_c("user-timeline-mongodb", "find_and_modify"),),
                   (_c("user-timeline-redis", "ZADD"),)),
                _c("home-timeline-service", "WriteHomeTimeline",
                   (_c("social-graph-service", "GetFollowers",
                       (_c("social-graph-redis", "ZRANGE"),),
                       (_c("social-graph-mongodb", "find_one", p=sg_miss),),
                       (_c("social-graph-redis", "ZADD", p=sg_miss),)),),
                   # one pipeline: a ZADD per follower (and mentioned user)
                   (_c("home-timeline-redis", "ZADD", repeat=FOLLOWERS),)),
            ),
        ),),
    )
    return {
        "read-home-timeline": RequestType("read-home-timeline",
                                          "/wrk2-api/home-timeline/read", 0.6, home),
        "read-user-timeline": RequestType("read-user-timeline",
                                          "/wrk2-api/user-timeline/read", 0.3, user),
        "compose-post": RequestType("compose-post", "/wrk2-api/post/compose", 0.1, compose),
    }


# Deployed (DeathStarBench has them) but on no path of the mixed workload: media-service's stores
# serve media uploads and reads through media-frontend, and url-shorten's memcached serves
# expanding short urls; the wrk2 mix exercises neither (ComposeUrls only inserts into mongodb).
NOT_IN_MIX = frozenset({"media-mongodb", "media-memcached", "url-shorten-memcached"})

MIX: dict[str, float] = {name: rt.share for name, rt in request_types().items()}


def visits(rt: RequestType, mean_followers: float = 0.0) -> Counter[str]:
    """Expected calls each service receives per request of type `rt` (probabilities multiplied
    down the tree; FOLLOWERS repeats count `mean_followers`)."""
    out: Counter[str] = Counter()

    def go(call: Call, weight: float) -> None:
        n = mean_followers if call.repeat == FOLLOWERS else float(call.repeat)
        w = weight * call.probability * n
        if w <= 0:  # never happens (p = 0, or no followers): not a visit, nor its children
            return
        out[call.service] += w
        for stage in call.stages:
            for c in stage:
                go(c, w)

    go(rt.root, 1.0)
    return out


def mixed_visits(mix: Mapping[str, float] | None = None, mean_followers: float = 0.0,
                 cache: CacheRatios | None = None) -> Counter[str]:
    """Expected calls per service per request of the mixed workload (shares normalised)."""
    mix = dict(MIX if mix is None else mix)
    types = request_types(cache)
    unknown = set(mix) - set(types)
    if unknown:
        raise ValueError(f"unknown request types {sorted(unknown)}; use {sorted(types)}")
    total = sum(mix.values())
    if total <= 0 or any(v < 0 for v in mix.values()):
        raise ValueError(f"request mix {mix} needs non-negative shares with a positive sum")
    out: Counter[str] = Counter()
    for name, share in mix.items():
        for svc, v in visits(types[name], mean_followers).items():
            out[svc] += share / total * v
    return out


def check(types: Mapping[str, RequestType] | None = None) -> list[str]:
    """Structural problems of the call graph (empty when sound): unknown services, calls into
    the front end or out of a store, probabilities outside [0, 1], shares not summing to 1."""
    types = request_types() if types is None else types
    out = []
    for name, rt in types.items():
        if rt.root.service != "nginx-web-server":
            out.append(f"{name}: enters at {rt.root.service}, not nginx-web-server")
        for parent, call in rt.root.walk():
            svc = SERVICES.get(call.service)
            if svc is None:
                out.append(f"{name}: unknown service {call.service}")
                continue
            if parent is not None and svc.kind == FRONTEND:
                out.append(f"{name}: {parent} calls the front end")
            if svc.kind == STORE and call.stages:
                out.append(f"{name}: store {call.service} makes calls")
            if parent is not None and SERVICES.get(parent, svc).kind == STORE:
                out.append(f"{name}: store {parent} calls {call.service}")
            if not 0.0 <= call.probability <= 1.0:
                out.append(f"{name}: {call.service}.{call.operation} probability "
                           f"{call.probability} outside [0, 1]")
    total = sum(rt.share for rt in types.values())
    if abs(total - 1.0) > 1e-9:
        out.append(f"request shares sum to {total}, not 1")
    return out
