"""deathstarbench/emulation: the call graph as data (structure, request mix, expected visits,
agreement with the Kubernetes manifests) and the social graph loader (synthetic files, the real
socfb-Reed98 graph from the repo's data/, and a property over random edge lists)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_helpers import REPO

from runqscale.deathstarbench.emulation import callgraph as cg
from runqscale.deathstarbench.emulation.socialgraph import SocialGraphError, load_edges

REED98 = REPO / "data/deathstarbench/socfb-Reed98.edges"
BASE = REPO / "deathstarbench/manifests/base"


def manifest_objects() -> list[dict]:
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [d for rel in kust["resources"] for d in yaml.safe_load_all((BASE / rel).read_text())
            if d]


# ------------------------------------------------------------------ call graph


def test_call_graph_is_sound():
    assert cg.check() == []


def test_request_mix_is_60_30_10():
    assert cg.MIX == {"read-home-timeline": 0.6, "read-user-timeline": 0.3, "compose-post": 0.1}
    paths = {rt.path for rt in cg.request_types().values()}
    assert paths == {"/wrk2-api/home-timeline/read", "/wrk2-api/user-timeline/read",
                     "/wrk2-api/post/compose"}


def test_every_service_is_on_some_request_path():
    seen = {c.service for rt in cg.request_types().values() for _, c in rt.root.walk()}
    assert seen == set(cg.SERVICES) - cg.NOT_IN_MIX


def test_services_match_the_manifests():
    objs = manifest_objects()
    deps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    svcs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    assert set(deps) == set(cg.SERVICES)
    for name, s in cg.SERVICES.items():
        assert svcs[name]["spec"]["ports"][0]["port"] == s.port
        opted = "runqscale.io/policy" in (deps[name]["metadata"].get("annotations") or {})
        assert opted == (s.kind != cg.STORE), name


def test_every_callee_of_a_cpp_service_is_in_service_config():
    """A C++ service finds its peers and stores through service-config.json."""
    cm = next(o for o in manifest_objects() if o["kind"] == "ConfigMap"
              and o["metadata"]["name"] == "social-network-config")
    cfg = json.loads(cm["data"]["service-config.json"])
    for rt in cg.request_types().values():
        for caller, callee, _ in rt.edges():
            if cg.SERVICES[caller].kind == cg.LOGIC:
                assert cfg[callee]["addr"] == callee
                assert cfg[callee]["port"] == cg.SERVICES[callee].port


def test_reads_touch_only_their_timeline_and_post_storage():
    types = cg.request_types()
    home = {c for _, c, _ in types["read-home-timeline"].edges()}
    assert home == {"home-timeline-service", "home-timeline-redis", "post-storage-service",
                    "post-storage-memcached", "post-storage-mongodb"}
    user = {c for _, c, _ in types["read-user-timeline"].edges()}
    assert user == {"user-timeline-service", "user-timeline-redis", "user-timeline-mongodb",
                    "post-storage-service", "post-storage-memcached", "post-storage-mongodb"}


def test_compose_builds_the_post_in_parallel_then_stores_and_fans_out():
    root = cg.request_types()["compose-post"].root
    (cp_stage,) = root.stages
    (compose,) = cp_stage
    assert compose.service == "compose-post-service"
    parts, writes = compose.stages
    assert {c.service for c in parts} == {"text-service", "unique-id-service", "media-service",
                                         "user-service"}
    assert {c.service for c in writes} == {"post-storage-service", "user-timeline-service",
                                          "home-timeline-service"}
    home = next(c for c in writes if c.service == "home-timeline-service")
    assert home.stages[0][0].service == "social-graph-service"  # followers first
    assert home.stages[-1][0].service == "home-timeline-redis"
    assert home.stages[-1][0].repeat == cg.FOLLOWERS


def test_user_timeline_reads_posts_while_refilling_redis():
    (stage,) = cg.request_types()["read-user-timeline"].root.stages
    (utl,) = stage
    first, miss, last = utl.stages
    assert [(c.service, c.operation) for c in first] == [("user-timeline-redis", "ZREVRANGE")]
    assert miss[0].service == "user-timeline-mongodb" and miss[0].probability < 1
    assert {c.service for c in last} == {"post-storage-service", "user-timeline-redis"}


def test_visits_multiply_probabilities_and_follower_fanout():
    exact = cg.CacheRatios(0.0, 0.0, 0.0, 0.0)
    types = cg.request_types(exact)
    v = cg.visits(types["read-home-timeline"])
    assert v == {"nginx-web-server": 1, "home-timeline-service": 1, "home-timeline-redis": 1,
                 "post-storage-service": 1, "post-storage-memcached": 1}  # no misses
    misses = cg.request_types(cg.CacheRatios(post_storage_memcached_miss=0.25))
    v = cg.visits(misses["read-home-timeline"])
    assert v["post-storage-mongodb"] == pytest.approx(0.25)
    assert v["post-storage-memcached"] == pytest.approx(1.25)  # get, then set on a miss
    v = cg.visits(types["compose-post"], mean_followers=39.0)
    assert v["home-timeline-redis"] == pytest.approx(39.0)
    assert v["social-graph-service"] == v["unique-id-service"] == 1


def test_mixed_visits_weight_by_share():
    exact = cg.CacheRatios(0.0, 0.0, 0.0, 0.0)
    m = cg.mixed_visits(mean_followers=10.0, cache=exact)
    assert m["nginx-web-server"] == pytest.approx(1.0)
    assert m["home-timeline-service"] == pytest.approx(0.6 + 0.1)
    assert m["user-timeline-service"] == pytest.approx(0.3 + 0.1)
    assert m["post-storage-service"] == pytest.approx(1.0)  # every request
    assert m["home-timeline-redis"] == pytest.approx(0.6 + 0.1 * 10)
    assert m["text-service"] == pytest.approx(0.1)
    # shares are normalised
    assert cg.mixed_visits({"compose-post": 2.0})["compose-post-service"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown request types"):
        cg.mixed_visits({"login": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        cg.mixed_visits({"compose-post": -1.0, "read-home-timeline": 2.0})


def test_check_reports_broken_graphs():
    bad = cg.RequestType("bad", "/x", 1.0, cg.Call("nginx-web-server", "GET", (
        (cg.Call("user-mongodb", "find", ((cg.Call("user-service", "X"),),)),
         cg.Call("no-such-service", "Y"),
         cg.Call("text-service", "Z", probability=1.5)),
    )))
    problems = cg.check({"bad": bad})
    assert any("store user-mongodb makes calls" in p for p in problems)
    assert any("store user-mongodb calls user-service" in p for p in problems)
    assert any("unknown service no-such-service" in p for p in problems)
    assert any("probability 1.5" in p for p in problems)
    half = cg.RequestType("half", "/x", 0.5, cg.Call("text-service", "X"))
    problems = cg.check({"half": half})
    assert any("not nginx-web-server" in p for p in problems)
    assert any("sum to 0.5" in p for p in problems)


# ------------------------------------------------------------------ social graph


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "g.edges"
    p.write_text(text)
    return p


def test_loader_parses_comments_duplicates_and_self_loops(tmp_path):
    p = write(tmp_path, "% header\n# another\n1 0\n0 1\n2,1\n\n3 3\n1 3 0.5\n")
    g = load_edges(p)
    assert g.users == 4 and g.friendships == 3
    assert g.duplicates == 1 and g.self_loops == 1
    assert g.followers(1) == (0, 2, 3) and g.followees(0) == (1,)
    assert g.follows == 6 and g.mean_followers == pytest.approx(1.5)
    assert list(g.degrees()) == [1, 3, 1, 1]
    assert g.isolated() == []


def test_loader_users_fixes_the_count(tmp_path):
    g = load_edges(write(tmp_path, "0 1\n"), users=5)
    assert g.users == 5 and g.isolated() == [2, 3, 4]
    with pytest.raises(IndexError):
        g.followers(5)
    with pytest.raises(SocialGraphError, match=r"g\.edges:2: user id 7 is not below users=5"):
        load_edges(write(tmp_path, "0 1\n7 2\n"), users=5)


@pytest.mark.parametrize("text, where", [
    ("0 1\nx y\n", ":2: 'x y' is not `a b`"),
    ("0 1\n3\n", ":2: '3' is not `a b`"),
    ("-1 2\n", ":1: '-1 2' is not `a b`"),
    ("% only a comment\n", ":1: no edges"),
])
def test_loader_errors_name_file_and_line(tmp_path, text, where):
    with pytest.raises(SocialGraphError) as e:
        load_edges(write(tmp_path, text))
    msg = str(e.value)
    assert where in msg and "\n" not in msg


def test_loader_missing_file_names_the_fix(tmp_path):
    with pytest.raises(SocialGraphError, match="no such edge-list file; pass e.g."):
        load_edges(tmp_path / "nope.edges")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=120))
def test_loader_property_symmetric_and_counts(tmp_path_factory, edges):
    p = tmp_path_factory.mktemp("g") / "r.edges"
    p.write_text("".join(f"{a} {b}\n" for a, b in edges))
    g = load_edges(p)
    distinct = {(min(a, b), max(a, b)) for a, b in edges if a != b}
    assert g.friendships == len(distinct)
    assert g.self_loops == sum(a == b for a, b in edges)
    assert g.friendships + g.self_loops + g.duplicates == len(edges)
    assert g.users == max(max(a, b) for a, b in edges) + 1
    assert int(g.degrees().sum()) == 2 * g.friendships
    for u in range(g.users):
        assert list(g.followers(u)) == sorted(set(g.followers(u)))
        for v in g.followers(u):
            assert u in g.followers(v)


def test_reed98_graph():
    g = load_edges(REED98)
    assert (g.users, g.friendships, g.self_loops, g.duplicates) == (962, 18812, 0, 0)
    assert g.isolated() == []
    assert g.mean_followers == pytest.approx(2 * 18812 / 962)
    assert int(g.degrees().sum()) == 2 * 18812
    # the compose fan-out the emulation will use: mean followers into the expected visits
    m = cg.mixed_visits(mean_followers=g.mean_followers)
    assert m["home-timeline-redis"] > m["post-storage-service"]
