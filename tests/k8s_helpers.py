"""A real Kubernetes control plane on this machine, for the tests and for `make k8s-up`.

etcd, kube-apiserver (RBAC,Node authorisation, service-account tokens), kube-controller-manager
(`--controllers=*`), kube-scheduler and kwok (simulated nodes), all built from source at the
pinned versions of k8s/versions.env by k8s/build.sh and cached in ~/.cache/runqscale/. Each
`ControlPlane` lives in its own temporary directory with its own certificates (openssl), ports
and etcd data dir; nothing is shared with another run.

    cp = ControlPlane(); cp.start()          # ~10-30 s on 2 cores
    cp.kubectl("get", "nodes")               # as the admin (client certificate, system:masters)
    cp.admin                                 # runqscale.scaler.k8s.client.ApiClient as the admin
    cp.stop()

Command line (used by the Makefile):
    python tests/k8s_helpers.py up [--dir DIR] [--real-node]   # start detached; prints the
                                                 # KUBECONFIG (--real-node: tests/node_helpers.py)
    python tests/k8s_helpers.py down [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runqscale.ports import free_port

REPO = Path(__file__).resolve().parent.parent
VERSIONS = dict(
    line.split("=", 1)
    for line in (REPO / "k8s/versions.env").read_text().splitlines()
    if line and not line.startswith("#") and "=" in line
)
K8S_VERSION = VERSIONS["K8S_VERSION"]
CACHE = Path(os.environ.get("RUNQSCALE_CACHE", Path.home() / ".cache/runqscale"))
BIN_DIR = Path(os.environ.get("K8S_BIN_DIR", CACHE / f"k8s-{K8S_VERSION}/bin"))
BINARIES = (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok",
)
DEFAULT_RUN_DIR = CACHE / "k8s-run"

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not os.access(BIN_DIR / b, os.X_OK)]


def wait_for(pred: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "") -> Any:
    """Poll `pred` until it returns a truthy value; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as exc:  # noqa: BLE001 - polling through transient failures
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what or pred}"
                       + (f" (last error: {last_exc})" if last_exc else ""))


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """CA, API server serving cert, admin client cert (system:masters), SA signing key pair."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=runqscale-test-ca", cwd=d)
    (d / "san.cnf").write_text(
        "[ext]\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "[client]\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    )
    for name, subj, ext in (
        ("apiserver", "/CN=kube-apiserver", "ext"),
        ("admin", "/O=system:masters/CN=runqscale-test-admin", "client"),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", subj, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", "san.cnf",
                 "-extensions", ext, cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def kubeconfig(server: str, ca: Path, user: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                   "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "u"}}],
        "current-context": "test",
    }


class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok in one temp directory."""

    def __init__(self, workdir: Path | None = None, fake_nodes: int = 3,
                 with_controllers: bool = True, bind_address: str = "127.0.0.1") -> None:
        if missing_binaries():
            raise FileNotFoundError(
                f"missing {', '.join(missing_binaries())} in {BIN_DIR}; run make k8s-build"
            )
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="runqscale-k8s-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = self.dir / "pki"
        self.fake_nodes = fake_nodes
        self.with_controllers = with_controllers
        # 0.0.0.0 when a real node's pods must reach it (tests/node_helpers.py DNATs the
        # `kubernetes` Service to it); loopback otherwise
        self.bind_address = bind_address
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self._admin = None

    # ------------------------------------------------------------------ paths

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def admin(self):
        """An ApiClient authenticated as the admin (client certificate)."""
        from runqscale.scaler.k8s.client import ApiClient, RetryPolicy

        if self._admin is None:
            self._admin = ApiClient(
                self.server, ca_file=str(self.pki / "ca.crt"),
                client_cert=(str(self.pki / "admin.crt"), str(self.pki / "admin.key")),
                retry=RetryPolicy(attempts=3, base_seconds=0.1),
            )
        return self._admin

    def client_for_token(self, token: str, **kw: Any):
        from runqscale.scaler.k8s.client import ApiClient

        return ApiClient(self.server, token=token, ca_file=str(self.pki / "ca.crt"), **kw)

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, args: Sequence[str]) -> subprocess.Popen:
        logf = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        p = subprocess.Popen([str(BIN_DIR / args[0]), *args[1:]], stdout=logf, stderr=logf,
                             stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True)
        logf.close()
        self.procs[name] = p
        return p

    def _log_tail(self, name: str, n: int = 15) -> str:
        try:
            lines = (self.dir / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def _check_alive(self, name: str) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is not None:
            raise RuntimeError(f"{name} exited with {p.returncode}:\n{self._log_tail(name)}")

    def start(self) -> ControlPlane:
        t0 = time.monotonic()
        if not (self.pki / "sa.key").exists():
            make_pki(self.pki)
        for k in ("etcd", "etcd_peer", "apiserver", "cm", "sched", "kwok"):
            self.ports.setdefault(k, free_port())
        self._start_etcd()
        self.start_apiserver()
        self.timings["apiserver_ready_s"] = time.monotonic() - t0
        ca = self.pki / "ca.crt"
        admin_user = {"client-certificate": str(self.pki / "admin.crt"),
                      "client-key": str(self.pki / "admin.key")}
        self.admin_kubeconfig.write_text(json.dumps(kubeconfig(self.server, ca, admin_user)))
        if self.with_controllers:
            self._start_controllers()
            self.create_fake_nodes(self.fake_nodes)
            # the default ServiceAccount is what the test pods run as; its controller makes it
            wait_for(lambda: self.admin.get("/api/v1/namespaces/default/serviceaccounts/default"),
                     60, what="the default ServiceAccount (controller-manager)")
        self.timings["start_s"] = time.monotonic() - t0
        self._save_state()
        return self

    def _start_etcd(self) -> None:
        p, pp = self.ports["etcd"], self.ports["etcd_peer"]
        self._spawn("etcd", [
            "etcd", "--name=default", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p}",
            f"--advertise-client-urls=http://127.0.0.1:{p}",
            f"--listen-peer-urls=http://127.0.0.1:{pp}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{pp}",
            f"--initial-cluster=default=http://127.0.0.1:{pp}",
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=2147483648",
        ])

        def healthy() -> bool:
            self._check_alive("etcd")
            import urllib.request
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/health", timeout=2) as r:
                return b'"true"' in r.read()
        wait_for(healthy, 30, what="etcd /health")

    def start_apiserver(self, timeout: float = 90.0) -> None:
        k = self.pki
        self._spawn("kube-apiserver", [
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            f"--bind-address={self.bind_address}", f"--secure-port={self.ports['apiserver']}",
            "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--tls-cert-file={k / 'apiserver.crt'}",
            f"--tls-private-key-file={k / 'apiserver.key'}",
            f"--client-ca-file={k / 'ca.crt'}",
            "--authorization-mode=RBAC,Node",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={k / 'sa.pub'}",
            f"--service-account-signing-key-file={k / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true", "--profiling=false", "--v=1",
            # Events live one hour (the default); watch cache on (the default).
        ])
        wait_for(self._ready, timeout, 0.3, what="kube-apiserver /readyz")

    def _ready(self) -> bool:
        import ssl
        import urllib.request

        self._check_alive("kube-apiserver")
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=3) as r:
            return r.status == 200

    def stop_apiserver(self) -> None:
        self._terminate("kube-apiserver")

    def _start_controllers(self) -> None:
        kc = str(self.admin_kubeconfig)
        k = self.pki
        self._spawn("kube-controller-manager", [
            "kube-controller-manager", f"--kubeconfig={kc}", "--controllers=*",
            f"--service-account-private-key-file={k / 'sa.key'}", f"--root-ca-file={k / 'ca.crt'}",
            "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['cm']}", "--concurrent-deployment-syncs=5",
            "--v=1",
        ])
        self._spawn("kube-scheduler", [
            "kube-scheduler", f"--kubeconfig={kc}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['sched']}", "--v=1",
        ])
        self._spawn("kwok", [
            "kwok", f"--kubeconfig={kc}", "--manage-all-nodes=false",
            # pod stages whose Running pods report status resources (see the file's header)
            f"--config={REPO / 'k8s/kwok/stages.yaml'}",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            "--cidr=10.0.0.0/16", "--node-ip=10.0.0.1",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
        ])

    def create_fake_nodes(self, n: int, cpu: str = "16", memory: str = "64Gi") -> list[str]:
        names = []
        for i in range(n):
            name = f"kwok-node-{i}"
            node = {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                             "labels": {"kubernetes.io/hostname": name, "type": "kwok",
                                        "kubernetes.io/os": "linux"}},
                "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                           "capacity": {"cpu": cpu, "memory": memory, "pods": "110"}},
            }
            try:
                self.admin.create("/api/v1/nodes", node)
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) != 409:
                    raise
            names.append(name)

        def all_ready() -> bool:
            for self_check in ("kwok", "kube-controller-manager", "kube-scheduler"):
                self._check_alive(self_check)
            items = self.admin.get("/api/v1/nodes").get("items", [])
            ready = {
                i["metadata"]["name"] for i in items
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in i.get("status", {}).get("conditions") or [])
            }
            return set(names) <= ready
        wait_for(all_ready, 60, 0.3, what=f"{n} kwok nodes Ready")
        return names

    def _terminate(self, name: str, timeout: float = 10.0) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def stop(self, keep_dir: bool = False) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver",
                     "etcd"):
            self._terminate(name)
        state = self.dir / "state.json"
        if state.exists():
            state.unlink()
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _save_state(self) -> None:
        (self.dir / "state.json").write_text(json.dumps({
            "pids": {n: p.pid for n, p in self.procs.items()},
            "server": self.server, "kubeconfig": str(self.admin_kubeconfig),
            "version": K8S_VERSION,
        }, indent=1))

    # ------------------------------------------------------------------ helpers

    def kubectl(self, *args: str, kubeconfig_path: Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(BIN_DIR / "kubectl"), f"--kubeconfig={kubeconfig_path or self.admin_kubeconfig}",
               *args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({r.returncode}): "
                               f"{r.stderr.strip() or r.stdout.strip()}")
        return r

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bound token for a ServiceAccount, through the TokenRequest API."""
        r = self.admin.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": seconds}},
        )
        return r["status"]["token"]

    def token_kubeconfig(self, token: str, name: str) -> Path:
        p = self.dir / f"{name}.kubeconfig"
        p.write_text(json.dumps(kubeconfig(self.server, self.pki / "ca.crt", {"token": token})))
        return p


@dataclass
class DeployedScaler:
    """The control plane with deploy/ applied, and the scaler ServiceAccount's credentials."""

    cp: ControlPlane
    token: str
    kubeconfig: Path

    @property
    def token_file(self) -> Path:
        p = self.cp.dir / "scaler.token"
        if not p.exists():
            p.write_text(self.token)
        return p


# ------------------------------------------------------------------ test workloads


def ensure_namespace(cp: ControlPlane, ns: str) -> None:
    try:
        cp.admin.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": ns}})
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "status", None) != 409:
            raise


def deployment(name: str, replicas: int = 1, cpu: tuple[str, str] = ("100m", "200m"),
               memory: tuple[str, str] = ("64Mi", "128Mi"),
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Deployment of one container (kwok runs it: nothing is pulled or started)."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": dict(annotations or {})},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{
                        "name": "app", "image": "registry.invalid/runlang:1",
                        "resources": {"requests": {"cpu": cpu[0], "memory": memory[0]},
                                      "limits": {"cpu": cpu[1], "memory": memory[1]}},
                    }],
                },
            },
        },
    }


def running_pods(cp: ControlPlane, ns: str, app: str) -> list[dict[str, Any]]:
    items = cp.admin.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"app={app}")["items"]
    return [p for p in items if p.get("status", {}).get("phase") == "Running"
            and p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]


def wait_running(cp: ControlPlane, ns: str, app: str, n: int, timeout: float = 60) -> list:
    return wait_for(lambda: (lambda ps: ps if len(ps) == n else None)(running_pods(cp, ns, app)),
                    timeout, 0.2, what=f"{n} Running pods of {ns}/{app}")


class FreshSignals:
    """Writes a signals file with a fresh sample per workload every `every` seconds (atomically
    replaced, so a reader never sees half a line); `pause()` lets the signals go stale."""

    def __init__(self, path: Path, workloads: Sequence[str], every: float = 0.5,
                 runq_p95: float = 0.001) -> None:
        import threading

        self.path = Path(path)
        self.workloads = list(workloads)
        self.every = every
        self.runq_p95 = runq_p95
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._write()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _write(self) -> None:
        now = time.time()
        # three samples over 8 s (the newest is now): past showar's 6 s warm-up at once
        lines = [json.dumps({"ts": now - k * max(self.every, 4.0), "workload": w, "replicas": 1,
                             "runq_p95_seconds": self.runq_p95, "cpu_usage_cores": 0.05})
                 for w in self.workloads for k in range(3)]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if not self._paused.is_set():
                self._write()

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._write()
        self._paused.clear()

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)


class ScalerProcess:
    """`python -m runqscale.scaler.k8s` as a child process; its JSON stdout lines are collected
    with the local time each arrived."""

    def __init__(self, args: Sequence[str], log: Path) -> None:
        import threading

        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._err = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runqscale.scaler.k8s", *args], stdout=subprocess.PIPE,
            stderr=self._err, text=True, cwd=REPO,
        )
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.append((time.time(), json.loads(line)))
            except ValueError:
                continue

    def events(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in list(self.lines) if e.get("event") == kind]

    def is_leader(self) -> bool:
        ev = self.events("leader")
        return bool(ev) and ev[-1][1]["leader"]

    def kill(self) -> float:
        """SIGKILL (no Lease release); returns the time it was sent."""
        t = time.time()
        self.proc.kill()
        self.proc.wait(10)
        return t

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._t.join(5)
        self._err.close()


def _stop_from_state(d: Path) -> bool:
    state = d / "state.json"
    if not state.exists():
        return False
    pids = json.loads(state.read_text())["pids"]
    for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
        pid = pids.get(name)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    state.unlink()
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("up", "down"))
    ap.add_argument("--dir", type=Path, default=DEFAULT_RUN_DIR)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--real-node", action="store_true",
                    help="also a real node: containerd + kubelet (tests/node_helpers.py)")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if a.command == "down":
        from node_helpers import stop_node_from_state

        node = stop_node_from_state(a.dir / "node")
        print("stopped" if _stop_from_state(a.dir) or node else f"nothing running in {a.dir}")
        shutil.rmtree(a.dir, ignore_errors=True)
        return 0
    if (a.dir / "state.json").exists():
        print(f"already up: export KUBECONFIG={a.dir / 'admin.kubeconfig'}")
        return 0
    shutil.rmtree(a.dir, ignore_errors=True)
    cp = ControlPlane(a.dir, fake_nodes=a.nodes,
                      bind_address="0.0.0.0" if a.real_node else "127.0.0.1").start()
    print(f"Kubernetes {K8S_VERSION} up in {cp.timings['start_s']:.1f} s at {cp.server} "
          f"({a.nodes} kwok nodes); logs in {a.dir}")
    kubeconfig_path = cp.admin_kubeconfig
    if a.real_node:
        from node_helpers import Node

        node = Node(cp)
        try:
            node.start()
        except Exception:
            node.stop()
            _stop_from_state(a.dir)
            raise
        print(f"real node {node.name} Ready in {node.timings['ready_s']:.1f} s "
              f"(containerd + kubelet; logs in {node.dir})")
        # the one stable path to the cluster a user starts with make k8s-up
        kubeconfig_path = CACHE / "kubeconfig"
        shutil.copy(cp.admin_kubeconfig, kubeconfig_path)
    print(f"export KUBECONFIG={kubeconfig_path}; export PATH={BIN_DIR}:$PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main())
