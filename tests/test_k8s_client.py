"""Unit tests of the scaler's Kubernetes side that need no API server: the client's retry rules
(against a scripted local HTTP server), annotation validation, CPU quantities, the split of a
per-replica CPU size over containers and the QoS rule that decides in-place vs template."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from runqscale.scaler.actuators.kubernetes import label_selector, qos_class, split
from runqscale.scaler.k8s import annotations as ann
from runqscale.scaler.k8s.client import ApiClient, ApiError, RetryPolicy
from runqscale.scaler.k8s.quantity import format_cpu, parse_cpu
from runqscale.scaler.model import ScalerConfig
from runqscale.scaler.policies import POLICIES


class Scripted(http.server.BaseHTTPRequestHandler):
    script: list[tuple[int, dict, dict]] = []
    seen: list[str] = []

    def _answer(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        status, headers, body = self.script.pop(0)
        raw = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_PUT = _answer

    def log_message(self, *a):  # quiet
        pass


@pytest.fixture
def scripted():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    Scripted.seen = []
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _client(url: str, sleeps: list[float], attempts: int = 5) -> ApiClient:
    return ApiClient(url, token="t", retry=RetryPolicy(attempts, 0.2, 5.0),
                     sleep=sleeps.append, rand=lambda: 1.0)


def test_429_and_5xx_are_retried_with_backoff_and_retry_after(scripted):
    srv, url = scripted
    Scripted.script = [
        (429, {"Retry-After": "2"}, {"kind": "Status", "reason": "TooManyRequests"}),
        (503, {}, {"kind": "Status", "reason": "ServiceUnavailable"}),
        (500, {}, {}),
        (200, {}, {"spec": {"replicas": 3}}),
    ]
    sleeps: list[float] = []
    assert _client(url, sleeps).get("/x") == {"spec": {"replicas": 3}}
    assert sleeps == [2.0, 0.4, 0.8]  # Retry-After honoured, then 0.2 * 2^attempt
    assert len(Scripted.seen) == 4


def test_409_and_4xx_are_not_retried(scripted):
    srv, url = scripted
    Scripted.script = [(409, {}, {"kind": "Status", "reason": "Conflict", "message": "changed"})]
    sleeps: list[float] = []
    with pytest.raises(ApiError) as e:
        _client(url, sleeps).update("/x", {})
    assert e.value.conflict and "changed" in str(e.value)
    assert sleeps == [] and len(Scripted.seen) == 1


def test_unreachable_server_gives_up_with_status_0():
    sleeps: list[float] = []
    with pytest.raises(ApiError) as e:
        _client("http://127.0.0.1:9", sleeps, attempts=3).get("/x")
    assert e.value.status == 0 and e.value.unavailable
    assert len(sleeps) == 2


def test_backoff_is_capped():
    p = RetryPolicy(10, 0.2, 5.0)
    assert p.delay(9, lambda: 1.0, None) == 5.0
    assert p.delay(0, lambda: 1.0, 60.0) == 5.0


# ---------------------------------------------------------------- annotations

POLS = tuple(POLICIES)


@pytest.mark.parametrize("annotations, named, fix", [
    ({ann.POLICY: "showr"}, ann.POLICY, "use one of showar"),
    ({ann.POLICY: "hpa", ann.MAX_REPLICAS: "ten"}, ann.MAX_REPLICAS, 'like runqscale.io/max-re'),
    ({ann.POLICY: "hpa", ann.MIN_REPLICAS: "-1"}, ann.MIN_REPLICAS, "like"),
    ({ann.POLICY: "hpa", ann.MAX_REPLICAS: "0"}, ann.MAX_REPLICAS, ">= 1"),
    ({ann.POLICY: "hpa", ann.MIN_REPLICAS: "5", ann.MAX_REPLICAS: "3"}, ann.MAX_REPLICAS,
     "make runqscale.io/min-replicas <= runqscale.io/max-replicas"),
    ({ann.POLICY: "hpa", ann.TARGET_RUNQ_P95: "5"}, ann.TARGET_RUNQ_P95, "5ms"),
    ({ann.POLICY: "hpa", "runqscale.io/max-replica": "3"}, "runqscale.io/max-replica",
     "did you mean runqscale.io/max-replicas?"),
])
def test_bad_annotations_give_one_line_naming_annotation_and_fix(annotations, named, fix):
    with pytest.raises(ann.AnnotationError) as e:
        ann.parse(annotations, ScalerConfig(), POLS)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(named + ":") and fix in msg
    assert e.value.annotation == named


def test_good_annotations_and_opt_out():
    assert ann.parse({"app": "x"}, ScalerConfig(), POLS) is None
    spec = ann.parse({ann.POLICY: " showar ", ann.MIN_REPLICAS: "2", ann.MAX_REPLICAS: "8",
                      ann.TARGET_RUNQ_P95: "2.5ms"}, ScalerConfig(), POLS)
    assert spec.policy == "showar"
    assert (spec.config.min_replicas, spec.config.max_replicas) == (2, 8)
    assert spec.config.target_runq_p95_seconds == pytest.approx(0.0025)


# ---------------------------------------------------------------- quantities and resources

@pytest.mark.parametrize("text, cores", [("250m", 0.25), ("1", 1.0), ("0.5", 0.5),
                                         ("1500m", 1.5), ("100000n", 0.0001), ("2k", 2000.0)])
def test_parse_cpu(text, cores):
    assert parse_cpu(text) == pytest.approx(cores)


def test_format_cpu_and_bad_quantity():
    assert [format_cpu(x) for x in (1.0, 0.25, 1.5, 0.0001)] == ["1", "250m", "1500m", "1m"]
    with pytest.raises(ValueError, match="250m"):
        parse_cpu("lots")


def test_split_in_proportion_or_equally():
    assert split(0.6, [0.1, 0.2]) == pytest.approx([0.2, 0.4])
    assert split(0.6, [0.1, None]) == pytest.approx([0.3, 0.3])
    assert split(None, [0.1, None]) == [0.1, None]


def test_qos_class_rules():
    g = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}
    b = {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}
    assert qos_class([{"resources": g}]) == "Guaranteed"
    assert qos_class([{"resources": b}]) == "Burstable"
    assert qos_class([{"resources": {}}]) == "BestEffort"
    assert qos_class([{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]) == "Guaranteed"


def test_label_selector():
    sel = {"matchLabels": {"b": "2", "a": "1"},
           "matchExpressions": [{"key": "t", "operator": "In", "values": ["x", "y"]},
                                {"key": "z", "operator": "DoesNotExist"}]}
    assert label_selector(sel) == "a=1,b=2,t in (x,y),!z"
