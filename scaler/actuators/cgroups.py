"""Cgroups this process owns, with processes started inside them: the local actuator's replicas.

A `Sandbox` owns a tree of cgroups under one name in the chosen hierarchy (v1 `cpu` with a
matching `cpuacct` group when that is mounted separately, or cgroup2), sizes them as the kubelet
would (CFS quota = limit, shares/weight = request), starts processes directly inside them, and
removes everything on close, killing what is left. What runs in a group is the caller's argv.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.model import Hierarchy

CFS_PERIOD_US = 100_000

@dataclass
class Group:
    name: str
    rel: str  # path relative to the measured hierarchy root
    dirs: list[str]  # every directory making up this group (cpu, cpuacct, or the v2 one)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]


class Sandbox:
    def __init__(self, hierarchy: Hierarchy, name: str = "runqscale-test",
                 mounts: CgroupMounts | None = None) -> None:
        self.mounts = mounts or CgroupMounts.read()
        self.hierarchy = hierarchy
        if hierarchy is Hierarchy.V2:
            if not self.mounts.v2:
                raise RuntimeError("no cgroup2 mount")
            self.roots = [self.mounts.v2]
        else:
            if not self.mounts.v1_cpu:
                raise RuntimeError("no v1 cpu hierarchy mounted")
            self.roots = [self.mounts.v1_cpu]
            if self.mounts.v1_cpuacct and self.mounts.v1_cpuacct != self.mounts.v1_cpu:
                self.roots.append(self.mounts.v1_cpuacct)
        self.base = f"/{name}-{os.getpid()}"
        self.groups: dict[str, Group] = {}
        for r in self.roots:
            os.makedirs(r + self.base, exist_ok=True)
        if hierarchy is Hierarchy.V2:
            _delegate_cpu(self.root + self.base)

    @property
    def root(self) -> str:
        return self.roots[0]

    def group(self, rel_name: str, quota_cores: float | None = None) -> Group:
        """Create (or return) cgroup `base/rel_name`; intermediate directories are created too."""
        if rel_name in self.groups:
            return self.groups[rel_name]
        rel = f"{self.base}/{rel_name}"
        dirs = []
        if self.hierarchy is Hierarchy.V2:
            parent = self.root + self.base
            for part in rel_name.split("/")[:-1]:  # intermediate directories first
                parent = os.path.join(parent, part)
                os.makedirs(parent, exist_ok=True)
                _delegate_cpu(parent)
        for r in self.roots:
            os.makedirs(r + rel, exist_ok=True)
            dirs.append(r + rel)
        g = Group(rel_name, rel, dirs)
        if quota_cores is not None:
            self.set_quota(g, quota_cores)
        self.groups[rel_name] = g
        return g

    def set_quota(self, g: Group, cores: float | None) -> None:
        quota = -1 if cores is None else max(1000, int(cores * CFS_PERIOD_US))
        if self.hierarchy is Hierarchy.V2:
            value = "max" if quota < 0 else str(quota)
            _write(os.path.join(g.dirs[0], "cpu.max"), f"{value} {CFS_PERIOD_US}")
        else:
            _write(os.path.join(g.dirs[0], "cpu.cfs_period_us"), str(CFS_PERIOD_US))
            _write(os.path.join(g.dirs[0], "cpu.cfs_quota_us"), str(quota))

    def spawn(self, g: Group, argv: list[str], **popen: object) -> subprocess.Popen:
        """Start `argv` inside `g` from its first instruction (moved there before exec)."""
        procs_files = [os.path.join(d, "cgroup.procs") for d in g.dirs]

        def enter() -> None:
            for pf in procs_files:
                with open(pf, "w") as f:
                    f.write("0")

        p = subprocess.Popen(argv, preexec_fn=enter, stdin=subprocess.DEVNULL,  # noqa: PLW1509
                             **popen)  # type: ignore[call-overload]
        g.procs.append(p)
        return p

    def remove(self, g: Group) -> None:
        for p in g.procs:
            _kill(p)
        for d in reversed(g.dirs):
            _rmdir_tree(d)
        self.groups.pop(g.name, None)

    def close(self) -> None:
        for g in list(self.groups.values()):
            for p in g.procs:
                _kill(p)
        for r in self.roots:
            _rmdir_tree(r + self.base)
        self.groups.clear()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _delegate_cpu(path: str) -> None:
    """cgroup v2: children get cpu.max and cpu.weight only if their parent lists `cpu` in its
    cgroup.subtree_control. Enabled wherever the parent itself has the controller (a hybrid
    node's cgroup2 has none: nothing to do, and v2 groups there take no quota)."""
    with open(os.path.join(path, "cgroup.controllers")) as f:
        if "cpu" not in f.read().split():
            return
    with open(os.path.join(path, "cgroup.subtree_control")) as f:
        if "cpu" in f.read().split():
            return
    _write(os.path.join(path, "cgroup.subtree_control"), "+cpu")


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _rmdir_tree(path: str) -> None:
    """Remove a cgroup directory and its children (deepest first), waiting for dying tasks."""
    if not os.path.isdir(path):
        return
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
        for _ in range(50):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                _kill_all_in(dirpath)
                time.sleep(0.02)


def _kill_all_in(dirpath: str) -> None:
    try:
        with open(os.path.join(dirpath, "cgroup.procs")) as f:
            for line in f:
                try:
                    os.kill(int(line), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
    except OSError:
        pass


def set_shares(sb: Sandbox, g: Group, cores: float | None) -> None:
    """The CPU request as the kubelet maps it: v1 `cpu.shares` = cores × 1024 (min 2), v2
    `cpu.weight` from those shares; None restores the default (1024 / 100)."""
    shares = 1024 if cores is None else max(2, int(round(cores * 1024)))
    if sb.hierarchy is Hierarchy.V2:
        path = os.path.join(g.dirs[0], "cpu.weight")
        if os.path.exists(path):
            _write(path, str(100 if cores is None else _weight(shares)))
    else:
        _write(os.path.join(g.dirs[0], "cpu.shares"), str(shares))


def set_base_shares(sb: Sandbox, cores: float) -> None:
    """Weight of the whole sandbox against its siblings (what `kubepods` gets on a node:
    its allocatable cores × 1024), so the experiment's own quotas, not neighbours, bound it."""
    shares = max(2, int(round(cores * 1024)))
    if sb.hierarchy is not Hierarchy.V2:
        _write(os.path.join(sb.roots[0] + sb.base, "cpu.shares"), str(shares))
    elif os.path.exists(path := os.path.join(sb.roots[0] + sb.base, "cpu.weight")):
        _write(path, str(_weight(shares)))


def _weight(shares: int) -> int:
    """v1 shares -> v2 cpu.weight, as the kubelet (runc) converts them."""
    return 1 + ((shares - 2) * 9999) // 262142
