"""On a real node (containerd + runc + kubelet, tests/node_helpers.py), all parts real: the agent
runs as the DaemonSet of deploy/ (overlays/node-test: the images built on the node), a real
Prometheus scrapes it, and `runqscale scaler k8s --apply` acts on runlang services running as
Deployments. The kubelet applies the scaler's writes: an in-place resize lands in the container's
cgroup, a scale-out's new pod starts and becomes Ready. The delays are printed (pytest -s)."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from k8s_helpers import (
    ControlPlane,
    DeployedScaler,
    ScalerProcess,
    ensure_namespace,
    running_pods,
    wait_for,
)
from node_helpers import PROJECT_IMAGE, Node, node_missing

from runqscale.scaler.k8s import annotations as ann
from runqscale.scaler.k8s.client import path
from runqscale.validation.runlang_service import DEFAULT_SOURCE

pytestmark = [pytest.mark.node, pytest.mark.kubernetes, pytest.mark.prometheus,
              pytest.mark.kernel, pytest.mark.slow]

NS = "node-e2e"
SYSTEM_NS = "runqscale-system"
CPU_V1 = Path("/sys/fs/cgroup/cpu")


@pytest.fixture(scope="module")
def real_node(tmp_path_factory):
    """Control plane + kwok + the real node, deploy/overlays/node-test applied, the agent pod
    Ready on the real node; yields (deployed scaler credentials, node, agent pod)."""
    from k8s_helpers import REPO, missing_binaries

    missing = missing_binaries() + node_missing()
    if missing:
        pytest.skip(f"real node needs: {', '.join(missing)} (make deps)")
    cp = ControlPlane(tmp_path_factory.mktemp("k8s"), bind_address="0.0.0.0")
    node = None
    try:
        cp.start()
        node = Node(cp)
        node.start()
        print(f"\nreal node Ready {node.timings['ready_s']:.1f} s after start "
              f"(images {node.timings['images_s']:.1f} s, containerd + imports "
              f"{node.timings['containerd_s']:.1f} s)")
        cp.kubectl("apply", "-k", str(REPO / "deploy/overlays/node-test"))
        t0 = time.monotonic()
        agent = wait_for(lambda: _ready_pods(cp, SYSTEM_NS, node.name), 120, 0.5,
                         what="the agent pod Ready on the real node")[0]
        print(f"agent pod Ready on {node.name} {time.monotonic() - t0:.1f} s after apply")
        token = cp.service_account_token(SYSTEM_NS, "runqscale-scaler")
        yield DeployedScaler(cp, token, cp.token_kubeconfig(token, "scaler")), node, agent
    finally:
        if node is not None:
            node.stop()
        cp.stop(keep_dir=bool(os.environ.get("RUNQSCALE_KEEP_K8S")))


def _ready_pods(cp, ns: str, node_name: str, app: str | None = None) -> list[dict]:
    sel = {"fieldSelector": f"spec.nodeName={node_name}"}
    if app:
        sel["labelSelector"] = f"app={app}"
    pods = cp.admin.get(f"/api/v1/namespaces/{ns}/pods", **sel)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in p.get("status", {}).get("conditions") or [])]


def runlang(name: str, node_name: str, cpu: tuple[str, str], max_replicas: int) -> dict:
    """The runlang service (validation/runlang_service.py) from the project's image, opted in."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": {
            ann.POLICY: "showar", ann.TARGET_RUNQ_P95: "2ms",
            ann.MAX_REPLICAS: str(max_replicas)}},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node_name},
                "terminationGracePeriodSeconds": 2,
                "containers": [{
                    "name": "app", "image": PROJECT_IMAGE, "imagePullPolicy": "Never",
                    "command": ["python3", "-m", "runqscale.validation.runlang_service",
                                "--host", "0.0.0.0", "--port", "8080", "--timeout", "30"],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                       "periodSeconds": 1},
                    "resources": {"requests": {"cpu": cpu[0], "memory": "64Mi"},
                                  "limits": {"cpu": cpu[1], "memory": "256Mi"}},
                }],
            }},
        },
    }


class Load:
    """`clients` threads posting the service's CPU-bound default program to its pods in turn."""

    def __init__(self, cp, app: str, clients: int) -> None:
        self.cp, self.app, self.stop_ev = cp, app, threading.Event()
        self.ok = self.failed = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        body = json.dumps({"language": "python", "source": DEFAULT_SOURCE}).encode()
        i = 0
        while not self.stop_ev.is_set():
            pods = [p["status"]["podIP"] for p in running_pods(self.cp, NS, self.app)
                    if p["status"].get("podIP")]
            if not pods:
                time.sleep(0.2)
                continue
            i += 1
            req = urllib.request.Request(f"http://{pods[i % len(pods)]}:8080/api/run", data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                self.ok += 1
            except OSError:
                self.failed += 1
                time.sleep(0.2)

    def stop(self) -> None:
        self.stop_ev.set()
        for t in self.threads:
            t.join(35)


def start_scaler(env: DeployedScaler, prom_url: str, log: Path,
                 recs: Path | None = None) -> ScalerProcess:
    cp = env.cp
    return ScalerProcess([*(["--log", str(recs)] if recs else []),
        "--apply", "--prometheus", prom_url, "--server", cp.server,
        "--token-file", str(env.token_file), "--ca-file", str(cp.pki / "ca.crt"),
        "--namespace", NS, "--lease-namespace", SYSTEM_NS, "--lease-name", f"node-{log.stem}",
        "--identity", log.stem, "--tick=1", "--period=2", "--max-signal-age=20",
        "--window=60", "--max-replicas=3",
    ], log)


def first_applied(scaler: ScalerProcess, workload: str, action: str, timeout: float):
    def found():
        for t, e in scaler.events("outcome"):
            if e["workload"] == f"{NS}/{workload}" and e["applied"] and e["action"] == action:
                return t, e
        if scaler.proc.poll() is not None:
            raise RuntimeError(f"scaler exited with {scaler.proc.returncode}")
        return None
    return wait_for(found, timeout, 0.1, what=f"an applied {action} of {workload}")


def cpu_cores(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def test_agent_on_the_real_node_labels_series_with_kubelet_pods(real_node, prometheus):
    """The agent pod runs with the manifest's security context (not privileged, RuntimeDefault
    seccomp, capabilities dropped after attach) and names real pods in its series."""
    env, node, agent = real_node
    sc = agent["spec"]["containers"][0]["securityContext"]
    assert sc["privileged"] is False and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    prom = prometheus([f"{agent['status']['podIP']}:9100"])
    name = agent["metadata"]["name"]
    series = wait_for(lambda: prom.query(
        f'runqscale_runqueue_latency_seconds_count{{namespace="{SYSTEM_NS}",pod="{name}"}}'),
        60, 1.0, what="the agent's own series in Prometheus")
    labels = series[0]["metric"]
    assert labels["container"] == "agent" and labels["node"] == node.name
    assert f"pod{agent['metadata']['uid']}" in labels["cgroup"]   # the kubelet's pod cgroup
    status = Path(f"/proc/{_agent_pid(agent)}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Seccomp"].strip() == "2" and fields["CapEff"].strip() == "0" * 16


def _agent_pid(agent: dict) -> int:
    cid = agent["status"]["containerStatuses"][0]["containerID"].split("//", 1)[1]
    for procs in CPU_V1.glob(f"kubepods/**/{cid}/cgroup.procs"):
        return int(procs.read_text().split()[0])
    raise AssertionError(f"no cgroup for container {cid}")


def test_throttled_pod_is_resized_in_place_into_its_cgroup(real_node, prometheus, tmp_path):
    env, node, agent = real_node
    cp = env.cp
    ensure_namespace(cp, NS)
    cp.admin.create(path("Deployment", NS), runlang("starved", node.name, ("50m", "100m"), 1))
    (pod,) = wait_for(lambda: _ready_pods(cp, NS, node.name, "starved"), 120, 0.3,
                      what="starved Ready")
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("//", 1)[1]
    quota_file = CPU_V1 / f"kubepods/burstable/pod{pod['metadata']['uid']}/{cid}/cpu.cfs_quota_us"
    before = int(quota_file.read_text())
    assert before == 10000   # 100m of a 100 ms period: the container's own cgroup
    prom = prometheus([f"{agent['status']['podIP']}:9100"])
    load = Load(cp, "starved", clients=2)
    scaler = start_scaler(env, prom.url, tmp_path / "resize.log")
    try:
        t_dec, out = first_applied(scaler, "starved", "resize", 150)
        spec = cp.admin.get(path("Pod", NS, pod["metadata"]["name"]))["spec"]
        limit = cpu_cores(spec["containers"][0]["resources"]["limits"]["cpu"])
        want = round(limit * 100000)

        def landed():
            q = int(quota_file.read_text())
            return (time.time(), q) if q == want else None
        t_cg, after = wait_for(landed, 30, 0.02, what=f"cpu.cfs_quota_us = {want}")
    finally:
        scaler.stop()
        load.stop()
    print(f"\nresize: {out['message']}\nquota {before} -> {after} us per 100 ms in "
          f"{quota_file}; decision -> cgroup {t_cg - t_dec:.2f} s; load {load.ok} ok, "
          f"{load.failed} failed")
    assert after > before and load.ok > 0
    # the same pod (in place, no restart)
    now = cp.admin.get(path("Pod", NS, pod["metadata"]["name"]))
    assert now["metadata"]["uid"] == pod["metadata"]["uid"]
    assert now["status"]["containerStatuses"][0]["restartCount"] == 0
    cp.kubectl("delete", "deployment", "-n", NS, "starved", "--wait=false")


def test_contended_workload_scales_out_and_new_pods_become_ready(real_node, prometheus,
                                                                 tmp_path):
    env, node, agent = real_node
    cp = env.cp
    ensure_namespace(cp, NS)
    # a neighbour that is not opted in: two busy processes with a 1-core request, no limit
    cp.admin.create(path("Deployment", NS), {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "noisy"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "noisy"}},
                 "template": {"metadata": {"labels": {"app": "noisy"}}, "spec": {
                     "nodeSelector": {"kubernetes.io/hostname": node.name},
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "burn", "image": PROJECT_IMAGE,
                                     "imagePullPolicy": "Never",
                                     "command": ["python3", "-c",
                                                 "import os\nos.fork()\nwhile 1: pass"],
                                     "resources": {"requests": {"cpu": "1"}}}]}}}})
    cp.admin.create(path("Deployment", NS), runlang("contended", node.name, ("50m", "2"), 3))
    wait_for(lambda: _ready_pods(cp, NS, node.name, "contended"), 120, 0.3,
             what="contended Ready")
    prom = prometheus([f"{agent['status']['podIP']}:9100"])
    load = Load(cp, "contended", clients=2)
    recs = tmp_path / "recs.jsonl"
    scaler = start_scaler(env, prom.url, tmp_path / "scaleout.log", recs)
    try:
        t_dec, out = first_applied(scaler, "contended", "scale_out", 150)
        n = out["replicas"][1]
        ready = wait_for(lambda: (lambda ps: (time.time(), ps) if len(ps) >= n else None)(
            _ready_pods(cp, NS, node.name, "contended")), 120, 0.1,
            what=f"{n} Ready replicas of contended")

        def measured() -> float | None:  # showar's own start-up delay, from the signals
            for line in reversed(recs.read_text().splitlines() if recs.exists() else []):
                d = json.loads(line)["signals"].get("startup_delay_seconds")
                if d is not None:
                    return float(d)
            return None
        startup = wait_for(measured, 60, 0.5, what="showar's measured start-up delay in the log")
    finally:
        scaler.stop()
        load.stop()
        cp.kubectl("delete", "deployment", "-n", NS, "noisy", "--wait=false")
    t_ready, pods = ready
    print(f"\nscale-out: {out['message']}\n{out['replicas'][0]} -> {n} replicas; decision -> "
          f"all Ready {t_ready - t_dec:.2f} s; showar's start-up delay from the signals "
          f"{startup:.1f} s; load {load.ok} ok, {load.failed} failed")
    # the delay showar plans with is this scale-up's, as its signals saw it (pods counted once
    # they report), so it cannot be far from decision -> Ready
    assert 0 < startup <= t_ready - t_dec + 15
    assert n > out["replicas"][0] and len(pods) >= n and load.ok > 0
    cp.kubectl("delete", "deployment", "-n", NS, "contended", "--wait=false")


def test_bcc_backend_runs_in_its_image_with_the_same_security_context(real_node, prometheus):
    """Last in this module: it replaces the agent DaemonSet with deploy/overlays/node-test-bcc."""
    import subprocess

    from k8s_helpers import REPO
    from node_helpers import NODE_CACHE

    env, node, _ = real_node
    cp = env.cp
    images = NODE_CACHE / "images"
    subprocess.run([str(REPO / "k8s/node/images.sh"), str(images)], env={**os.environ, "BCC": "1"},
                   check=True, capture_output=True, timeout=1800)
    node.ctr("images", "import", "--base-name", "localhost/runqscale-bcc",
             str(images / "runqscale-bcc.tar"), timeout=600)
    cp.kubectl("apply", "-k", str(REPO / "deploy/overlays/node-test-bcc"))

    def bcc_agent():
        for p in _ready_pods(cp, SYSTEM_NS, node.name):
            if p["spec"]["containers"][0]["image"].startswith("localhost/runqscale-bcc"):
                return p
        return None
    agent = wait_for(bcc_agent, 120, 0.5, what="the bcc agent pod Ready")
    sc = agent["spec"]["containers"][0]["securityContext"]
    assert sc["privileged"] is False and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["capabilities"]["add"] == ["BPF", "PERFMON"]
    prom = prometheus([f"{agent['status']['podIP']}:9100"])
    info = wait_for(lambda: prom.query("runqscale_agent_build_info"), 60, 1.0,
                    what="the bcc agent's build info")
    assert info[0]["metric"]["backend"] == "bcc"
    name = agent["metadata"]["name"]
    assert wait_for(lambda: prom.query(
        f'runqscale_runqueue_latency_seconds_count{{namespace="{SYSTEM_NS}",pod="{name}",'
        f'container="agent"}}'), 60, 1.0, what="the bcc agent's own labelled series")
