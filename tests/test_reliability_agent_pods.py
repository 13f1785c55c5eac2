"""One bad pod entry must not cost the other workloads their labels (issue 10).

tests/test_reliability_inputs.py fuzzes the pod-list parser; here the whole daemon runs: the real
agent polls a kubelet whose pod list mixes good pods with malformed entries (wrong types at every
level), real processes wait in kubelet-layout cgroups on the real kernel, and:

1. the good pods' series carry their namespace/pod/container, the bad pod's cgroup is exported
   under its path (not guessed, not dropped), every scrape parses;
2. the kubelet then answers with garbage (not JSON, then not a PodList): the agent keeps serving
   with the labels it had, logs the error, counts no sample error;
3. a good list with a new pod comes back: the new pod is labelled without a restart."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from agent_helpers import AgentProcess, FakePod, one_value, samples_for
from conftest import require_root

from runqscale.probes.model import Hierarchy
from runqscale.validation.sandbox import Sandbox

pytestmark = pytest.mark.kernel

P95 = "runqscale_runqueue_latency_p95_seconds"
SLEEPER = "import time\nwhile True: time.sleep(0.003)"


class RawKubelet:
    """Serves `body` (bytes, whatever they are) on GET /pods."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.requests = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests += 1
                body = outer.body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, items: list) -> None:
        self.body = json.dumps({"kind": "PodList", "items": items}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _bad_entries(bad: FakePod) -> list:
    return [
        None, 7, "pod", [], {"metadata": []}, {"metadata": {"uid": 5}},
        {"metadata": {"uid": bad.uid, "namespace": ["ns"], "name": "bad"},
         "status": {"containerStatuses": [
             {"name": "c", "containerID": "x://" + bad.container_id}]}},
        {"metadata": {"uid": "u-1", "namespace": "ns", "name": {"a": 1}}},
        {"metadata": {"uid": "u-2", "namespace": "ns", "name": "n"}, "status": "Running"},
        {"metadata": {"uid": "u-3", "namespace": "ns", "name": "n"},
         "status": {"containerStatuses": "c"}},
    ]


def _labelled(agent: AgentProcess, pod: FakePod, timeout: float = 8.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if samples_for(agent.scrape(), P95, namespace=pod.namespace, pod=pod.name,
                       container=pod.container):
            return True
        time.sleep(0.2)
    return False


def test_a_bad_pod_entry_does_not_cost_the_others_their_labels() -> None:
    require_root()
    good = [FakePod.make("shop", f"api-{i}", "server") for i in range(3)]
    bad = FakePod.make("shop", "bad", "c")
    late = FakePod.make("shop", "late-0", "worker")
    kubelet = RawKubelet()
    kubelet.serve([*_bad_entries(bad)[:4], *(p.json() for p in good), *_bad_entries(bad)[4:]])
    with Sandbox(Hierarchy.V1_CPU, name="rqs-badpod") as sb:
        groups = {p.name: sb.group(p.cgroup_name()) for p in [*good, bad, late]}
        for g in groups.values():
            sb.spawn(g, code=SLEEPER)
        agent = AgentProcess("--kubelet-url", kubelet.url, "--pods-refresh", "0.5s",
                             "--cgroup", sb.base, interval="0.5s")
        try:
            # 1. good pods labelled; the bad one exported under its path
            for p in good:
                assert _labelled(agent, p), f"{p.name} lost its labels to a bad entry"
            s = agent.scrape()
            rel = groups["bad"].rel
            assert samples_for(s, P95, namespace="", pod="", container=rel, cgroup=rel)
            # 2. garbage answers: keep serving with the labels already resolved
            errors0 = one_value(s, "runqscale_agent_sample_errors_total")
            for body in (b"{not json", b"[1, 2]", b'{"items": 5}'):
                kubelet.body = body
                time.sleep(1.2)
                s = agent.scrape()
                for p in good:
                    assert samples_for(s, P95, pod=p.name), f"{p.name} after {body!r}"
            assert one_value(s, "runqscale_agent_sample_errors_total") == errors0
            # 3. a good list with a new pod: labelled without a restart
            kubelet.serve([*(p.json() for p in good), late.json(), *_bad_entries(bad)])
            assert _labelled(agent, late), "a pod added after the garbage was never labelled"
            assert agent.proc.poll() is None
        finally:
            agent.stop()
            kubelet.close()
    err = agent.stderr()
    assert "pods (kubelet)" in err and "not a PodList" in err, err
    print(f"\nbad pod entries: {len(_bad_entries(bad))} malformed entries beside "
          f"{len(good)} good pods, then 3 garbage answers; good pods labelled throughout, "
          f"0 sample errors, kubelet polled {kubelet.requests} times")
