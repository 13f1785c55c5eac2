"""The local actuator with a real nginx in front of real runlang replicas in v1 cgroups:
nginx's upstreams follow the replica set, scale-in drains (requests in flight finish), quotas and
shares follow resizes, every actuation's delay is measured."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

import pytest
from conftest import require_root

from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.model import Hierarchy
from runqscale.scaler.actuators.cgroups import Sandbox
from runqscale.scaler.actuators.local import LocalActuator
from runqscale.scaler.model import CurrentState, Recommendation, WorkloadRef
from runqscale.validation.nginx import NGINX_BIN, Nginx, render
from runqscale.validation.runlang_service import run_python, runlang_argv

pytestmark = pytest.mark.kernel


def run(url: str, source: str = "print(1)", timeout: float = 20) -> tuple[str, dict]:
    body = json.dumps({"language": "python", "source": source}).encode()
    req = urllib.request.Request(url + "/api/run", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.headers["X-Replica"], json.loads(r.read())


def read(g, name: str) -> int:
    with open(os.path.join(g.dirs[0], name)) as f:
        return int(f.read())


def test_render_lists_upstreams() -> None:
    conf = render("/tmp/x", 8080, [9001, 9002])
    assert "server 127.0.0.1:9001" in conf and "server 127.0.0.1:9002" in conf
    assert "listen 127.0.0.1:8080" in conf
    assert "server 127.0.0.1:1 down;" in render("/tmp/x", 8080, [])


@pytest.fixture
def stack():
    require_root()
    mounts = CgroupMounts.read()
    if not mounts.v1_cpu:
        pytest.skip("no v1 cpu hierarchy (CPU quotas need it on this host)")
    if not os.path.exists(NGINX_BIN):
        pytest.skip("no nginx (apt-get install nginx-light)")
    sb = Sandbox(Hierarchy.V1_CPU, name="runqscale-test-actuator", mounts=mounts)
    infra = sb.group("infra")
    ng = Nginx(spawn=lambda argv: sb.spawn(infra, argv=argv))
    ng.start([])
    act = LocalActuator(sb, ng, "replicas", lambda port, name: runlang_argv(port, name, 10.0),
                        drain_timeout_s=10)
    yield act, ng
    act.close()
    ng.stop()
    sb.close()


def test_upstreams_follow_replicas_and_scale_in_drains(stack) -> None:
    act, ng = stack
    a = act.set_state(CurrentState(1, 0.4, 0.4))
    assert a.error is None and a.details["action"] == "scale_out" and a.delay_seconds > 0
    assert a.applied and not a.dry_run and a.method == "local"
    assert a.before == CurrentState(0) and a.after == CurrentState(1, 0.4, 0.4)
    r1 = act.replicas[0]
    assert read(r1.group, "cpu.cfs_quota_us") == 40000 and read(r1.group, "cpu.shares") == 410
    who, out = run(ng.url)
    assert who == "r1" and out["ok"] and out["stdout"].strip() == "1"

    # the actuator contract: a policy's recommendation, its `recommended` state applied
    cur = act.current()
    a = act.apply(Recommendation(time.time(), WorkloadRef("local", "runlang"), "test", {}, cur,
                                 CurrentState(3, 0.4, 0.4), "scale_out", "more load",
                                 dry_run=False))
    assert a.error is None and a.details["action"] == "scale_out" and a.applied
    assert a.before == cur and a.after == CurrentState(3, 0.4, 0.4) == act.current()
    assert a.details["ready_seconds"] > 0 and a.details["balancer_seconds"] > 0
    assert ng.upstreams == [r.port for r in act.replicas] and len(ng.upstreams) == 3
    assert {run(ng.url)[0] for _ in range(12)} == {"r1", "r2", "r3"}

    # three slow requests in flight (least_conn puts one on each replica), then scale in to 1
    results: list = []
    slow = "import time; time.sleep(1.5); print('done')"
    threads = [threading.Thread(target=lambda: results.append(run(ng.url, slow)))
               for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    a = act.set_state(CurrentState(1, 0.4, 0.4))
    assert a.error is None and a.details["action"] == "scale_in"
    assert a.details["stopped"] == ["r2", "r3"]
    for t in threads:
        t.join(20)
    assert len(results) == 3
    assert all(o["ok"] and o["stdout"].strip() == "done" for _, o in results)
    assert {w for w, _ in results} == {"r1", "r2", "r3"}  # the drained ones answered too
    assert {run(ng.url)[0] for _ in range(6)} == {"r1"}
    deadline = time.monotonic() + 15
    while act.alive() > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert act.alive() == 1
    assert not any(os.path.isdir(r.group.dirs[0]) for r in act.draining)

    a = act.set_state(CurrentState(1, 0.2, 0.6))
    assert a.details["action"] == "resize" and a.error is None
    assert read(r1.group, "cpu.cfs_quota_us") == 60000 and read(r1.group, "cpu.shares") == 205
    assert act.allocated_cores() == pytest.approx(0.6)


def test_describe_endpoint(stack) -> None:
    act, ng = stack
    act.set_state(CurrentState(1, 0.5, 0.5))
    with urllib.request.urlopen(ng.url + "/api/describe", timeout=10) as r:
        d = json.loads(r.read())
    assert d["service"] == "runlang" and d["languages"] == ["python"]
    who, out = run(ng.url, "import sys; sys.exit(3)")
    assert not out["ok"] and out["exit_code"] == 3


def test_run_python_timeout() -> None:
    out = run_python("while True: pass", 0.5)
    assert out["timed_out"] and not out["ok"] and out["exit_code"] is None
    assert 0.5 <= out["seconds"] < 5
