"""A real node beside the kwok ones: containerd + runc + a CNI bridge + the kubelet.

Everything it starts lives in one run directory (containerd state and socket, kubelet root, pod
logs, CNI config and leases, certificates); containerd's content store is cached in
~/.cache/runqscale/node/containerd so the locally built images (k8s/node/images.sh) are imported
once. Nothing is pulled: imagePullPolicy Never, the sandbox image is the local pause image.

    node = Node(cp).start()      # cp: a ControlPlane started with bind_address="0.0.0.0"
    node.stop()                  # pods' sandboxes torn down by the kubelet, then everything else

One real node at a time per machine (kubelet's /kubepods cgroups and containerd's cache are
shared): a second start fails naming the lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from k8s_helpers import BIN_DIR, CACHE, REPO, ControlPlane, free_port, wait_for

NODE_NAME = "runqscale-node"
NODE_CACHE = CACHE / "node"
PAUSE_IMAGE = "localhost/runqscale/pause:dev"
PROJECT_IMAGE = "localhost/runqscale:dev"
SERVICE_IP = "10.96.0.1"   # the `kubernetes` Service (first IP of --service-cluster-ip-range)
POD_SUBNET = "10.88.0.0/24"
BRIDGE = "rqs0"
GATEWAY = "10.88.0.1"
CNI_BIN = Path("/usr/lib/cni")

HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "umoci", "debootstrap",
              "iptables", "gcc")


def node_missing() -> list[str]:
    """What the real node needs and this machine lacks (make node-deps installs it)."""
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if not os.access(BIN_DIR / "kubelet", os.X_OK):
        missing.append(f"{BIN_DIR}/kubelet (make k8s-build)")
    if not (CNI_BIN / "bridge").exists():
        missing.append(f"{CNI_BIN}/bridge (containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def _run(*cmd: str, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-2000:]}")
    return r


def host_ip() -> str:
    out = _run("ip", "-4", "-o", "route", "get", "1.1.1.1").stdout.split()
    return out[out.index("src") + 1]


class Node:
    def __init__(self, cp: ControlPlane, workdir: Path | None = None,
                 name: str = NODE_NAME) -> None:
        self.cp = cp
        self.name = name
        self.dir = Path(workdir) if workdir else cp.dir / "node"
        self.sock = self.dir / "containerd.sock"
        self.procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}
        self._lock_fd: int | None = None
        self._owns_node = False   # past the lock: stop() may clean the machine's node state
        self._dnat = ["PREROUTING", "-d", f"{SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
                      "-m", "comment", "--comment", f"runqscale-node {self.dir}",
                      "-j", "DNAT", "--to-destination", f"{GATEWAY}:{cp.ports['apiserver']}"]

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 180) -> Node:
        t0 = time.monotonic()
        self._lock()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._netns_before = sorted(_netns())
        images = NODE_CACHE / "images"
        _run(str(REPO / "k8s/node/images.sh"), str(images), timeout=1800)
        self.timings["images_s"] = time.monotonic() - t0
        self._write_configs()
        self._start_containerd()
        self._save_state()   # from here on, stop() and make k8s-down know what to stop
        for tar, name in (("pause.tar", "localhost/runqscale/pause"),
                          ("runqscale.tar", "localhost/runqscale")):
            self.ctr("images", "import", "--base-name", name, str(images / tar), timeout=600)
        self.timings["containerd_s"] = time.monotonic() - t0
        # kube-proxy's one job here: pods reach the API server through the `kubernetes` Service.
        _run("iptables", "-t", "nat", "-I", *self._dnat)
        self._start_kubelet()
        wait_for(self.ready, timeout, 0.5, what=f"node {self.name} Ready")
        self.timings["ready_s"] = time.monotonic() - t0
        self._save_state()
        (NODE_CACHE / "owner").write_text(f"{self.procs['containerd'].pid} {self.dir}")
        self._release()
        return self

    def _lock(self) -> None:
        """flock for the start itself; then the owner file names the running containerd, which
        outlives the process that started it (make k8s-up)."""
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        fd = os.open(NODE_CACHE / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"another real node is starting ({NODE_CACHE / 'lock'})") from None
        self._lock_fd = fd
        owner = NODE_CACHE / "owner"
        try:
            pid, where = owner.read_text().split(" ", 1)
            if b"containerd" in Path(f"/proc/{pid}/cmdline").read_bytes():
                raise RuntimeError(f"a real node already runs from {where} (containerd pid "
                                   f"{pid}); stop it first (make k8s-down)")
        except (OSError, ValueError):
            pass
        self._owns_node = True

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _write_configs(self) -> None:
        d = self.dir
        for sub in ("cni", "cni-ipam", "kubelet", "pod-logs", "containerd-state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "containerd.toml").write_text(f"""version = 2
root = "{NODE_CACHE / 'containerd'}"
state = "{d / 'containerd-state'}"
[grpc]
  address = "{self.sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE (bounding set 0x1fffeffffff): runc cannot set the negative
  # oom_score_adj of sandboxes ("failed to update /proc/self/oom_score_adj: Permission denied");
  # this clamps it to containerd's own
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d / 'cni'}"
""")
        (d / "cni/10-runqscale.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "runqscale",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(d / "cni-ipam"),
                          "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=1))
        # The kubelet's client certificate: the Node authorizer knows it by this name and group.
        pki = self.cp.pki
        subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(d / "kubelet.key"), "-out", str(d / "kubelet.csr"), "-subj",
                        f"/O=system:nodes/CN=system:node:{self.name}"],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(d / "kubelet.csr"), "-CA",
                        str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"), "-CAcreateserial",
                        "-out", str(d / "kubelet.crt"), "-days", "2", "-extfile",
                        str(pki / "san.cnf"), "-extensions", "client"],
                       check=True, capture_output=True)
        from k8s_helpers import kubeconfig
        (d / "kubelet.kubeconfig").write_text(json.dumps(kubeconfig(
            self.cp.server, pki / "ca.crt",
            {"client-certificate": str(d / "kubelet.crt"), "client-key": str(d / "kubelet.key")})))
        self.ports = {"kubelet": free_port(), "healthz": free_port()}
        (d / "kubelet.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            # this machine mounts the v1 controllers (cgroup2 only at /sys/fs/cgroup/unified):
            # kubelet 1.34 refuses cgroup v1 unless told otherwise
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "failSwapOn": False,
            "featureGates": {"InPlacePodVerticalScaling": True},
            "address": "0.0.0.0", "port": self.ports["kubelet"], "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.ports["healthz"],
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(d / "pod-logs"), "maxPods": 40,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%",
                             "imagefs.available": "2%"},
            "imageGCHighThresholdPercent": 99, "imageGCLowThresholdPercent": 98,
            "resolvConf": "/etc/resolv.conf", "rotateCertificates": False,
            "nodeStatusUpdateFrequency": "2s", "syncFrequency": "10s",
        }, indent=1))

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        logf = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        p = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                             cwd=self.dir, start_new_session=True)
        logf.close()
        self.procs[name] = p
        return p

    def _alive(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is not None:
            tail = (self.dir / f"{name}.log").read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"{name} exited with {p.returncode}:\n" + "\n".join(tail))

    def _start_containerd(self) -> None:
        self._spawn("containerd", ["containerd", "--config", str(self.dir / "containerd.toml")])

        def up() -> bool:
            self._alive("containerd")
            return self.ctr("version", check=False).returncode == 0
        wait_for(up, 30, 0.2, what="containerd")

    def _start_kubelet(self) -> None:
        self._spawn("kubelet", [
            str(BIN_DIR / "kubelet"), f"--config={self.dir / 'kubelet.yaml'}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.dir / 'kubelet'}", f"--hostname-override={self.name}",
            f"--node-ip={host_ip()}", "--node-labels=type=real", "--v=2",
        ])

    def ready(self) -> bool:
        self._alive("containerd")
        self._alive("kubelet")
        node = self.cp.admin.get(f"/api/v1/nodes/{self.name}")
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in node.get("status", {}).get("conditions") or [])

    def ctr(self, *args: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess:
        cmd = ["ctr", "--address", str(self.sock), "-n", "k8s.io", *args]
        if check:
            return _run(*cmd, timeout=timeout)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def _save_state(self) -> None:
        (self.dir / "node.json").write_text(json.dumps({
            "pids": {n: p.pid for n, p in self.procs.items()}, "name": self.name,
            "dnat": self._dnat, "netns_before": self._netns_before}))

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        if not self._owns_node:   # another node runs: its bridge and NAT rules are not ours
            self._release()
            return
        self._owns_node = False
        stop_node(self.dir, self.cp, {n: p.pid for n, p in self.procs.items()}, self._dnat,
                  self.name, set(getattr(self, "_netns_before", _netns())))
        for p in self.procs.values():
            if p.poll() is None:
                p.wait(5)
        self._release()


def _kill(pid: int, wait: float = 15) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _netns() -> set[str]:
    return {p.name for p in Path("/run/netns").glob("cni-*")}


def _clean_network(netns_before: set[str]) -> None:
    """What a sandbox the kubelet did not stop leaves: its netns and its CNI NAT chain (this
    node's conflist is named runqscale; one node at a time, so new cni-* netns are ours)."""
    for ns in _netns() - netns_before:
        subprocess.run(["umount", f"/run/netns/{ns}"], capture_output=True)
        with contextlib.suppress(OSError):
            Path(f"/run/netns/{ns}").unlink()
    rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True,
                           text=True).stdout.splitlines()
    ours = [shlex.split(r) for r in rules if 'name: \\"runqscale\\"' in r]
    chains = {p[1] for p in ours if p[1].startswith("CNI-")}
    for p in ours:
        if p[1] == "POSTROUTING":
            chains.add(p[-1])
            subprocess.run(["iptables", "-t", "nat", "-D", *p[1:]], capture_output=True)
    for c in chains:
        subprocess.run(["iptables", "-t", "nat", "-F", c], capture_output=True)
        subprocess.run(["iptables", "-t", "nat", "-X", c], capture_output=True)


def stop_node(d: Path, cp: ControlPlane | None, pids: dict[str, int], dnat: list[str],
              name: str, netns_before: set[str]) -> None:
    """The kubelet first (a DaemonSet would re-create any pod deleted under it), then every
    container, containerd and its shims, what the sandboxes left (mounts, netns, NAT chains,
    empty pod cgroups), and the Node object with its pods."""
    sock = d / "containerd.sock"
    ctr = ["ctr", "--address", str(sock), "-n", "k8s.io"]
    if "kubelet" in pids:
        _kill(pids["kubelet"])
    if sock.exists():
        tasks = subprocess.run([*ctr, "tasks", "ls", "-q"], capture_output=True, text=True,
                               timeout=20).stdout.split()
        for t in tasks:
            subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", t], capture_output=True)
            subprocess.run([*ctr, "tasks", "rm", "-f", t], capture_output=True, timeout=20)
        for c in subprocess.run([*ctr, "containers", "ls", "-q"], capture_output=True,
                                text=True, timeout=20).stdout.split():
            subprocess.run([*ctr, "containers", "rm", c], capture_output=True, timeout=20)
    if "containerd" in pids:
        _kill(pids["containerd"])
    # shims of this containerd (they name its socket on their command line)
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and str(sock).encode() in cmd:
            _kill(int(pid_dir.name), 5)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(str(d) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    if dnat:
        subprocess.run(["iptables", "-t", "nat", "-D", *dnat], capture_output=True)
    _clean_network(netns_before)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    with contextlib.suppress(OSError):
        (NODE_CACHE / "owner").unlink()
    if cp is not None:
        with contextlib.suppress(Exception):
            cp.kubectl("delete", "node", name, "--wait=false", check=False, timeout=20)
            cp.kubectl("delete", "pods", "-A", "--field-selector", f"spec.nodeName={name}",
                       "--force", "--grace-period=0", check=False, timeout=30)
    for ctl in Path("/sys/fs/cgroup").iterdir():   # the kubelet's empty pod cgroups
        top = ctl / "kubepods"
        if top.is_dir():
            for sub in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def stop_node_from_state(d: Path) -> bool:
    """`make k8s-down`: stop the node recorded in d/node.json (the control plane still runs)."""
    state = d / "node.json"
    if not state.exists():
        return False
    s = json.loads(state.read_text())
    cp_dir = d.parent
    cp = None
    if (cp_dir / "state.json").exists():
        cp = ControlPlane.__new__(ControlPlane)
        cp.dir, cp.pki, cp._admin = cp_dir, cp_dir / "pki", None
        server = json.loads((cp_dir / "state.json").read_text())["server"]
        cp.ports = {"apiserver": int(server.rsplit(":", 1)[1])}
    stop_node(d, cp, s["pids"], s["dnat"], s["name"], set(s.get("netns_before", [])))
    state.unlink()
    return True
