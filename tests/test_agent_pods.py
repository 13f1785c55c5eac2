"""Pod sources and attribution, without a kernel: pod-list parsing, the file source, a fake kubelet
(polled, not per scrape; bearer token), a fake API server list+watch, and the label rules."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agent_helpers import FakeKubelet, FakePod, pod_list

from runqscale.agent.attribution import Attributor, Labels
from runqscale.agent.pods import (
    ApiServerPodSource,
    FilePodSource,
    HttpAuth,
    KubeletPodSource,
    PodSource,
    parse_pod_list,
)


def _wait(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_parse_pod_list_all_status_kinds() -> None:
    p = FakePod.make("ns", "web-0", "app")
    doc = pod_list([p])
    st = doc["items"][0]["status"]
    st["initContainerStatuses"] = [{"name": "init", "containerID": "cri-o://" + "1" * 64}]
    st["ephemeralContainerStatuses"] = [{"name": "debug", "containerID": "docker://" + "2" * 64}]
    doc["items"].append({"metadata": {"name": "pending", "namespace": "ns", "uid": "u-2"},
                         "status": {}})
    pods = parse_pod_list(doc)
    info = pods[p.uid]
    assert (info.namespace, info.name) == ("ns", "web-0")
    assert info.containers == {p.container_id: "app", "1" * 64: "init", "2" * 64: "debug"}
    assert pods["u-2"].containers == {}


def test_file_source_reloads_on_change_and_keeps_last_good(tmp_path) -> None:
    a, b = FakePod.make("n", "a", "c"), FakePod.make("n", "b", "c")
    f = tmp_path / "pods.json"
    f.write_text(json.dumps(pod_list([a])))
    src = FilePodSource(str(f))
    assert set(src.table().pods) == {a.uid} and src.table().version == 1
    f.write_text(json.dumps(pod_list([a, b])))
    src.poll()
    assert set(src.table().pods) == {a.uid, b.uid} and src.table().version == 2
    f.write_text("{not json")
    src.poll()
    assert set(src.table().pods) == {a.uid, b.uid} and src.errors == 1


def test_kubelet_polled_with_token_and_poked_by_unknown_pods(tmp_path) -> None:
    a, b = FakePod.make("n", "a", "c"), FakePod.make("n", "b", "c")
    kubelet = FakeKubelet([a], token="tok")
    tok = tmp_path / "token"
    tok.write_text("tok\n")
    src = KubeletPodSource(kubelet.url, HttpAuth(str(tok)), refresh=60, min_gap=0.1)
    try:
        _wait(lambda: a.uid in src.table().pods)
        n = kubelet.requests
        for _ in range(20):
            src.table()  # reading the table never makes a request
        assert kubelet.requests == n
        kubelet.pods.append(b)
        src.wanted(b.uid)  # an unknown pod appeared in a cgroup: refresh soon
        _wait(lambda: b.uid in src.table().pods)
    finally:
        src.close()
        kubelet.close()


def test_kubelet_auth_failure_keeps_table_and_counts(tmp_path) -> None:
    kubelet = FakeKubelet([FakePod.make("n", "a", "c")], token="right")
    tok = tmp_path / "token"
    tok.write_text("wrong")
    src = KubeletPodSource(kubelet.url, HttpAuth(str(tok)), refresh=60)
    try:
        _wait(lambda: src.errors >= 1)
        assert src.table().pods == {} and "401" in (src.last_error or "")
    finally:
        src.close()
        kubelet.close()


class _FakeApiServer:
    """GET /api/v1/pods?fieldSelector=spec.nodeName=X (list) and &watch=1 (a stream of events)."""

    def __init__(self, pods: list[FakePod]) -> None:
        self.pods, self.queries = pods, []
        self.events: list[dict] = []
        self.gone_once = True
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802
                outer.queries.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if "watch=1" not in self.path:
                    doc = pod_list(outer.pods)
                    doc["metadata"]["resourceVersion"] = "10"
                    self.wfile.write(json.dumps(doc).encode())
                    return
                if outer.gone_once:  # first watch: too old, forces a re-list
                    outer.gone_once = False
                    self.wfile.write(json.dumps({"type": "ERROR", "object": {
                        "kind": "Status", "code": 410, "message": "too old"}}).encode() + b"\n")
                    return
                for ev in outer.events:
                    self.wfile.write(json.dumps(ev).encode() + b"\n")
                    self.wfile.flush()
                time.sleep(0.5)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_apiserver_list_then_watch_node_scoped() -> None:
    a, b = FakePod.make("n", "a", "c"), FakePod.make("n", "b", "c")
    api = _FakeApiServer([a])
    obj_b = b.json()
    obj_b["metadata"]["resourceVersion"] = "12"
    obj_a = a.json()
    obj_a["metadata"]["resourceVersion"] = "13"
    api.events = [{"type": "ADDED", "object": obj_b}, {"type": "DELETED", "object": obj_a},
                  {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "14"}}}]
    src = ApiServerPodSource(api.url, "node-1", HttpAuth(), watch_seconds=1)
    try:
        _wait(lambda: set(src.table().pods) == {b.uid})
        assert src.lists >= 2  # 410 Gone made it list again
        assert all("fieldSelector=spec.nodeName%3Dnode-1" in q for q in api.queries)
        watches = [q for q in api.queries if "watch=1" in q]
        assert watches and "resourceVersion=10" in watches[0]
    finally:
        src.close()
        api.server.shutdown()


class _StaticPods(PodSource):
    kind = "test"

    def __init__(self, pods: list[FakePod]) -> None:
        super().__init__()
        self.wants: list[str] = []
        self.set(pods)

    def set(self, pods: list[FakePod]) -> None:
        self._publish(parse_pod_list(pod_list(pods)))

    def wanted(self, uid: str) -> None:
        self.wants.append(uid)


def test_attribution_rules() -> None:
    p = FakePod.make("prod", "api-1", "server")
    ghost = FakePod.make("prod", "ghost", "x")
    src = _StaticPods([p])
    at = Attributor(src, grace=5)
    base = "/rqs"
    assert at.labels(1, f"{base}/{p.cgroup_name()}", 0) == Labels("prod", "api-1", "server")
    # the pod's own cgroup, and a container id the status does not list: pod known, container ""
    assert at.labels(2, f"{base}/kubepods/burstable/pod{p.uid}", 0) == Labels("prod", "api-1", "")
    other = f"{base}/kubepods/burstable/pod{p.uid}/{'f' * 64}"
    assert at.labels(3, other, 0) == Labels("prod", "api-1", "")
    # not a pod: the path is the container label
    assert at.labels(4, "/system.slice/x.service", 0) == Labels("", "", "/system.slice/x.service")
    # unknown pod: path label, a refresh is asked for, counted once after the grace period
    gp = f"{base}/{ghost.cgroup_name()}"
    assert at.labels(5, gp, 0) == Labels("", "", gp)
    assert ghost.uid in src.wants and at.unknown_pods == 0
    at.labels(5, gp, 4.9)
    assert at.unknown_pods == 0
    at.labels(5, gp, 5.0)
    at.labels(5, gp, 6.0)
    assert at.unknown_pods == 1
    # it shows up: resolved on the next table version
    src.set([p, ghost])
    assert at.labels(5, gp, 7.0) == Labels("prod", "ghost", "x")
    assert at.unknown_pods == 1
