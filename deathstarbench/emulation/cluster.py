"""The social network on this machine: real stores, the mesh nginx, and every logic service's
replicas as processes in their own cgroups, each service scaled by its own local actuator.

    with Cluster(hierarchy, mounts, ClusterConfig(), graph) as c:
        c.front_url            # the front end (DSB's wrk2 routes)
        c.actuators["text-service"].set_state(CurrentState(2, 0.3, 0.3))

Cgroup layout under the sandbox: `services/<service>/<replica>` (what the probe attributes and
the scaler acts on), `stores/<store>` (redis, memcached), `infra` (nginx and the generator,
weighted so they keep up). Stores are seeded from the social graph before any service starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

from runqscale.deathstarbench.emulation.callgraph import LOGIC, SERVICES, STORE
from runqscale.deathstarbench.emulation.mesh import Mesh
from runqscale.deathstarbench.emulation.socialgraph import SocialGraph
from runqscale.deathstarbench.emulation.storeclient import Memcached, Redis
from runqscale.ports import free_port
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.model import Hierarchy
from runqscale.scaler.actuators.cgroups import Group, Sandbox, set_base_shares, set_shares
from runqscale.scaler.actuators.local import LocalActuator
from runqscale.scaler.model import CurrentState

LOGIC_SERVICES = [s.name for s in SERVICES.values() if s.kind == LOGIC]
STORES = [s for s in SERVICES.values() if s.kind == STORE]
REDIS_BIN = os.environ.get("REDIS_BIN", "/usr/bin/redis-server")
MEMCACHED_BIN = os.environ.get("MEMCACHED_BIN", "/usr/bin/memcached")


@dataclass(frozen=True)
class ClusterConfig:
    replicas: int = 1  # per logic service at the start
    cpu: float = 0.5  # request = limit per replica at the start (cores)
    per_service_cpu: Mapping[str, float] = field(default_factory=dict)  # overrides `cpu`
    posts_per_user: int = 5  # seeded posts (timelines are not empty at the start)
    request_timeout_s: float = 10.0
    mongodb_fsync: str = "everysec"  # the mongodb-role redis's appendfsync

    def state(self, service: str) -> CurrentState:
        c = self.per_service_cpu.get(service, self.cpu)
        return CurrentState(self.replicas, c, c)


def need_binaries() -> str | None:
    """None when redis and memcached are installed, else the one-line fix."""
    for b in (REDIS_BIN, MEMCACHED_BIN):
        if not os.path.exists(b):
            return (f"no {b}: apt-get install redis-server memcached "
                    "(or set REDIS_BIN/MEMCACHED_BIN)")
    return None


def _store_argv(kind: str, port: int, data_dir: str, mongodb_fsync: str) -> list[str]:
    if kind == "memcached":
        return [MEMCACHED_BIN, "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-m", "256",
                "-t", "1", "-u", "root", "-c", "4096"]
    argv = [REDIS_BIN, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--protected-mode", "no", "--daemonize", "no", "--dir", data_dir,
            "--logfile", "", "--loglevel", "warning"]
    if kind == "mongodb":  # a document store that persists every write (MongoDB's journal)
        argv += ["--appendonly", "yes", "--appendfsync", mongodb_fsync]
    else:
        argv += ["--appendonly", "no"]
    return argv


def _wait_port(port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:g} s")


class Cluster:
    def __init__(self, hierarchy: Hierarchy, mounts: CgroupMounts, cfg: ClusterConfig,
                 graph: SocialGraph, name: str = "runqscale-dsb") -> None:
        missing = need_binaries()
        if missing:
            raise RuntimeError(missing)
        self.cfg, self.graph = cfg, graph
        self.sb = Sandbox(hierarchy, name=name, mounts=mounts)
        self.workdir = tempfile.mkdtemp(prefix="runqscale-dsb-")
        self.placement: dict[str, str] = {}  # service -> cpu list for taskset ("" = any)
        try:
            set_base_shares(self.sb, float(os.cpu_count() or 1))
            self.infra = self.sb.group("infra")
            set_shares(self.sb, self.infra, 4.0)
            self.store_ports = self._start_stores()
            seed(self.store_ports, graph, cfg.posts_per_user)
            self.mesh = Mesh(LOGIC_SERVICES, read_timeout_s=cfg.request_timeout_s + 5,
                             spawn=lambda argv: self.sb.spawn(self.infra, argv=argv))
            self.mesh.start([])
            self.topology = os.path.join(self.workdir, "topology.json")
            with open(self.topology, "w") as f:
                json.dump({"services": self.mesh.mesh_ports, "stores": self.store_ports}, f)
            self.actuators = {s: LocalActuator(self.sb, self.mesh.balancer(s), f"services/{s}",
                                               argv=self._argv(s))
                              for s in LOGIC_SERVICES}
        except BaseException:
            self.close()
            raise

    @property
    def front_url(self) -> str:
        return self.mesh.url

    def service_group(self, service: str) -> Group:
        return self.sb.group(f"services/{service}")

    def store_group(self, store: str) -> Group:
        return self.sb.group(f"stores/{store}")

    def _argv(self, service: str):  # noqa: ANN202 - the actuator's argv(port, name) callback
        def argv(port: int, name: str) -> list[str]:
            cmd = [sys.executable, "-m", "runqscale.deathstarbench.emulation.service",
                   "--service", service, "--port", str(port), "--topology", self.topology,
                   "--replica", name]
            cpus = self.placement.get(service, "")
            return (["taskset", "-c", cpus] + cmd) if cpus else cmd
        return argv

    def _start_stores(self) -> dict[str, int]:
        ports = {}
        for st in STORES:
            port = free_port()
            data = os.path.join(self.workdir, st.name)
            os.makedirs(data, exist_ok=True)
            g = self.store_group(st.name)
            self.sb.spawn(g, argv=_store_argv(st.store or "redis", port, data,
                                              self.cfg.mongodb_fsync),
                          stdout=subprocess.DEVNULL)
            ports[st.name] = port
        for name, port in ports.items():
            _wait_port(port, 10, name)
        return ports

    def reset(self, states: Mapping[str, CurrentState] | None = None) -> None:
        """Every service to its state (default: the config's), drained replicas gone."""
        for s, act in self.actuators.items():
            st = (states or {}).get(s) or self.cfg.state(s)
            a = act.set_state(st)
            if a.error:
                raise RuntimeError(f"could not set up {s}: {a.error}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(
                a.alive() > len(a.replicas) for a in self.actuators.values()):
            time.sleep(0.1)

    def reseed(self) -> dict[str, int]:
        """Every store back to the seeded data with cold caches: the posts earlier runs composed
        are gone. Without it each run of a benchmark reads larger timelines and misses the
        post cache more than the one before (post-storage's CPU at equal requests rose by a
        third over 12 runs), a drift that favours whichever policy runs first."""
        asyncio.run(_flush(self.store_ports))
        return seed(self.store_ports, self.graph, self.cfg.posts_per_user)

    def place(self, placement: Mapping[str, str]) -> None:
        """Pin each service's replicas to a CPU list (a "node"); "" = anywhere. Running replicas
        are moved at once (every thread), new ones start there."""
        self.placement = dict(placement)
        for s, act in self.actuators.items():
            cpus = _cpu_set(self.placement.get(s, ""))
            for r in act.replicas:
                _set_affinity(r.proc.pid, cpus)

    def close(self) -> None:
        try:
            for act in getattr(self, "actuators", {}).values():
                act.close()
        finally:
            try:
                if hasattr(self, "mesh"):
                    self.mesh.stop()
            finally:
                self.sb.close()
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cpu_set(spec: str) -> set[int]:
    if not spec:
        return set(range(os.cpu_count() or 1))
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _set_affinity(pid: int, cpus: set[int]) -> None:
    try:
        tids = [t.id for t in psutil.Process(pid).threads()]
    except psutil.Error:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass  # the thread ended


# -- seeding -----------------------------------------------------------------------------------

async def _flush(ports: Mapping[str, int]) -> None:
    """Empty every store: FLUSHALL on the redis ones, flush_all on memcached."""
    for st in STORES:
        db = (Memcached if st.store == "memcached" else Redis)("127.0.0.1", ports[st.name])
        try:
            if isinstance(db, Memcached):
                await db.flush_all()
            elif (reply := await db.call("FLUSHALL")) != "OK":
                raise RuntimeError(f"{st.name}: FLUSHALL answered {reply!r}")
        finally:
            db._drop()


def seed(ports: Mapping[str, int], graph: SocialGraph, posts_per_user: int,
         seed_value: int = 1) -> dict[str, int]:
    """Users, follows and `posts_per_user` posts per user, written straight into the stores (as
    DSB's init_social_graph.py registers users and follows; the posts stand for earlier composes:
    post documents, user timelines in mongodb, home timelines fanned out to followers). Caches
    start cold. Returns counts."""
    return asyncio.run(_seed(ports, graph, posts_per_user, seed_value))


async def _seed(ports: Mapping[str, int], g: SocialGraph, k: int, seed_value: int) -> dict:
    rng = random.Random(seed_value)
    users = Redis("127.0.0.1", ports["user-mongodb"])
    sgm = Redis("127.0.0.1", ports["social-graph-mongodb"])
    posts = Redis("127.0.0.1", ports["post-storage-mongodb"])
    utm = Redis("127.0.0.1", ports["user-timeline-mongodb"])
    htr = Redis("127.0.0.1", ports["home-timeline-redis"])
    await users.pipeline([
        ("SET", f"user:username_{u}", json.dumps({
            "user_id": u, "username": f"username_{u}", "first_name": f"first_name_{u}",
            "last_name": f"last_name_{u}", "salt": f"{rng.getrandbits(64):016x}",
            "password_hashed": f"{rng.getrandbits(128):032x}"}))
        for u in range(g.users)])
    await sgm.pipeline([("SET", f"followers:{u}", json.dumps(list(g.followers(u))))
                        for u in range(g.users)])
    pid, ts, n_home = 1, 1_700_000_000_000, 0
    for u in range(g.users):
        post_cmds, ut_cmds, ht_cmds = [], [], []
        for _ in range(k):
            ts += 1
            doc = {"post_id": pid, "creator": {"user_id": u, "username": f"username_{u}"},
                   "text": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz ", k=140)),
                   "user_mentions": [], "media": [], "urls": [], "timestamp": ts,
                   "post_type": 0}
            post_cmds.append(("SET", f"post:{pid}", json.dumps(doc)))
            ut_cmds.append(("ZADD", f"ut:{u}", ts, pid))
            ht_cmds += [("ZADD", f"ht:{f}", ts, pid) for f in g.followers(u)]
            pid += 1
        n_home += len(ht_cmds)
        await asyncio.gather(posts.pipeline(post_cmds), utm.pipeline(ut_cmds),
                             htr.pipeline(ht_cmds))
    for c in (users, sgm, posts, utm, htr):
        c._drop()
    return {"users": g.users, "posts": pid - 1, "home_timeline_entries": n_home}
