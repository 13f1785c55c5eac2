"""The local actuator: a workload's replicas as processes in cgroups on this machine.

`apply(rec)` (the actuator contract, scaler/actuators/base.py) makes the replica set match
`rec.recommended`; `set_state(desired)` does the same for a caller that sets a size directly:

- scale out: a new cgroup per replica (CPU quota = the limit, `cpu.shares` = the request, as the
  kubelet maps them), the replica process started inside it, readiness polled (`GET /healthz`),
  then the load balancer's upstreams updated; the actuation delay runs from the call until the
  balancer sends traffic to the new set;
- scale in (graceful drain): the newest replicas leave the balancer first (its old workers finish
  their requests in flight), then get SIGTERM (the service finishes what it has), then their
  cgroups are removed; KILL only after `drain_timeout_s`;
- resize: every replica's quota and shares rewritten.

Every call returns an `ApplyResult` with the measured delay; nothing here decides anything.
What a replica runs is the caller's `argv(port, name)`; it must answer `GET /healthz` with 200.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runqscale.ports import free_port
from runqscale.scaler.actuators.base import ApplyResult
from runqscale.scaler.actuators.cgroups import Group, Sandbox, set_shares
from runqscale.scaler.model import CurrentState, Recommendation, classify


class ActuationError(RuntimeError):
    pass


@dataclass
class Replica:
    name: str
    port: int
    group: Group
    proc: subprocess.Popen
    started: float
    ready: float | None = None
    stopping: float | None = None  # when SIGTERM was sent


class Balancer:
    """What the actuator needs from a load balancer: route to these ports, return the seconds
    until traffic follows (validation.nginx.Nginx is one)."""

    def set_upstreams(self, upstreams: list[int]) -> float:  # pragma: no cover - interface
        raise NotImplementedError


def _healthy(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            s.settimeout(timeout_s)
            head = s.recv(64)
            return head.startswith(b"HTTP/") and head.split(b" ", 2)[1:2] == [b"200"]
    except OSError:
        return False


class LocalActuator:
    """One workload: its replicas are `argv(port, name)` processes in cgroups `parent/<name>`."""

    dry_run = False  # it always acts: the local loop has no one to ask first

    def __init__(self, sandbox: Sandbox, balancer: Balancer, parent: str,
                 argv: Callable[[int, str], list[str]], *, ready_timeout_s: float = 15.0,
                 drain_timeout_s: float = 15.0,
                 log: Callable[[str], None] | None = None) -> None:
        self.sb, self.lb = sandbox, balancer
        self.parent = sandbox.group(parent)
        self._argv = argv
        self.ready_timeout_s, self.drain_timeout_s = ready_timeout_s, drain_timeout_s
        self.replicas: list[Replica] = []
        self.draining: list[Replica] = []
        self.request: float | None = None
        self.limit: float | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._log = log or (lambda _m: None)

    # --- reads
    def current(self) -> CurrentState:
        return CurrentState(len(self.replicas), self.request, self.limit)

    @property
    def ready_replicas(self) -> int:
        return sum(1 for r in self.replicas if r.ready is not None)

    def allocated_cores(self) -> float:
        """Σ limits of every replica holding a cgroup now (draining ones included)."""
        self._reap()
        n = len(self.replicas) + len(self.draining)
        return n * (self.limit or 0.0)

    def alive(self) -> int:
        self._reap()
        return len(self.replicas) + len(self.draining)

    # --- writes
    def apply(self, rec: Recommendation) -> ApplyResult:
        """The actuator contract: make the replicas match `rec.recommended`."""
        return self.set_state(rec.recommended)

    def set_state(self, desired: CurrentState) -> ApplyResult:
        """Replicas, request and limit to `desired`; `details` holds the action and the steps'
        durations, an error (a replica not ready in time, a cgroup write refused) is reported."""
        with self._lock:
            t0 = time.monotonic()
            before = self.current()
            detail: dict[str, Any] = {}
            err = None
            try:
                if (desired.cpu_limit_cores != self.limit
                        or desired.cpu_request_cores != self.request):
                    self._resize(desired.cpu_request_cores, desired.cpu_limit_cores)
                    detail["resize_seconds"] = time.monotonic() - t0
                n = desired.replicas
                if n > len(self.replicas):
                    detail.update(self._scale_out(n - len(self.replicas)))
                elif n < len(self.replicas):
                    detail.update(self._scale_in(len(self.replicas) - n))
            except (ActuationError, OSError, RuntimeError) as e:
                err = str(e)
            after = self.current()
            action = classify(before, after)
            detail["action"] = action
            return ApplyResult(err is None and action != "none", False, "local",
                               f"{action}: {before.replicas} x {_cores(before)} -> "
                               f"{after.replicas} x {_cores(after)}", err, 1, before, after,
                               time.monotonic() - t0, detail)

    def _resize(self, request: float | None, limit: float | None) -> None:
        for r in self.replicas + self.draining:
            self._size(r.group, request, limit)
        self.request, self.limit = request, limit

    def _size(self, g: Group, request: float | None, limit: float | None) -> None:
        self.sb.set_quota(g, limit)
        set_shares(self.sb, g, request)

    def _scale_out(self, k: int) -> dict[str, Any]:
        t0 = time.monotonic()
        new: list[Replica] = []
        for _ in range(k):
            self._seq += 1
            name = f"r{self._seq}"
            g = self.sb.group(f"{self.parent.name}/{name}")
            self._size(g, self.request, self.limit)
            port = free_port()
            proc = self.sb.spawn(g, argv=self._argv(port, name), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            new.append(Replica(name, port, g, proc, time.monotonic()))
        deadline = t0 + self.ready_timeout_s
        pending = list(new)
        while pending and time.monotonic() < deadline:
            for r in list(pending):
                if r.proc.poll() is not None:
                    pending.remove(r)
                elif _healthy(r.port):
                    r.ready = time.monotonic()
                    pending.remove(r)
            if pending:
                time.sleep(0.02)
        ok = [r for r in new if r.ready is not None]
        for r in new:
            if r.ready is None:  # never became ready: do not keep a broken replica
                self.sb.remove(r.group)
        self.replicas.extend(ok)
        started = time.monotonic() - t0
        reload_s = self.lb.set_upstreams([r.port for r in self.replicas])
        if len(ok) < k:
            raise ActuationError(f"{k - len(ok)} of {k} new replicas did not become ready "
                                 f"within {self.ready_timeout_s:g} s")
        return {"started": [r.name for r in ok], "ready_seconds": started,
                "balancer_seconds": reload_s}

    def _scale_in(self, k: int) -> dict[str, Any]:
        leaving = self.replicas[-k:]
        self.replicas = self.replicas[:-k]
        reload_s = self.lb.set_upstreams([r.port for r in self.replicas])
        for r in leaving:
            r.stopping = time.monotonic()
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)  # the service drains what it still has
        self.draining.extend(leaving)
        self._reap()
        return {"stopped": [r.name for r in leaving], "balancer_seconds": reload_s}

    def _reap(self) -> None:
        """Remove the cgroups of drained replicas; KILL the ones past the drain timeout."""
        now = time.monotonic()
        for r in list(self.draining):
            stopping = r.stopping if r.stopping is not None else now
            if r.proc.poll() is None and now - stopping < self.drain_timeout_s:
                continue
            self.sb.remove(r.group)  # KILLs what is left
            self.draining.remove(r)

    def close(self) -> None:
        with self._lock:
            for r in self.replicas + self.draining:
                if r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 3
            for r in self.replicas + self.draining:
                try:
                    r.proc.wait(timeout=max(0.05, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
                if os.path.isdir(r.group.dirs[0]):
                    self.sb.remove(r.group)
            self.replicas, self.draining = [], []


def _cores(st: CurrentState) -> str:
    return f"{st.cpu_request_cores or 0:g}/{st.cpu_limit_cores or 0:g} cores"
