"""Leader election on a coordination.k8s.io/v1 Lease (the client-go protocol, simplified).

One scaler replica holds the Lease and renews it every `retry_period`; the others poll it. A
holder that could not renew for `renew_deadline` stops acting at once (before anyone else may take
over), and a candidate takes over once the holder's last renewal is `lease_duration` old:

    renew_deadline < lease_duration  ->  never two replicas acting at the same time
    holder killed       ->  a candidate takes over within lease_duration + retry_period

Every write is a PUT carrying the read `resourceVersion`, so two candidates racing for an expired
Lease cannot both win: the second gets 409 Conflict. On graceful shutdown `release()` empties the
holder so a successor does not wait for expiry. Time is injected: `clock` (wall) only stamps the
Lease; every local decision (am I still leading, has the holder expired) is timed on `monotonic`,
as client-go does, so a wall-clock step cannot keep a leader acting past its renew deadline
(backward) or make a live holder look expired (forward).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from runqscale.scaler.k8s.client import ApiClient, ApiError, path

log = logging.getLogger(__name__)


def micro_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str | None) -> float | None:
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


class LeaderElector:
    def __init__(
        self,
        client: ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.monotonic = monotonic
        self._renewed_at: float | None = None  # monotonic time of our last write as holder
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at: float = 0.0  # monotonic time when _observed last changed
        self.transitions = 0

    # ------------------------------------------------------------------ state

    def is_leader(self, mono: float | None = None) -> bool:
        """True while our last renewal is younger than renew_deadline (monotonic time)."""
        mono = self.monotonic() if mono is None else mono
        return self._renewed_at is not None and mono - self._renewed_at < self.renew_deadline

    @property
    def holder(self) -> str | None:
        return self._observed[0] if self._observed else None

    # ------------------------------------------------------------------ protocol

    def _spec(self, now: float, acquire: float, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, int(round(self.lease_duration))),
            "acquireTime": micro_time(acquire),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One round: create, renew or take over the Lease. Never raises on API errors."""
        now, mono = self.clock(), self.monotonic()
        lease_path = path("Lease", self.namespace, self.name)
        try:
            try:
                lease = self.client.get(lease_path)
            except ApiError as exc:
                if not exc.not_found:
                    raise
                self.client.create(
                    path("Lease", self.namespace),
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(now, now, 0),
                    },
                )
                return self._won(now, mono, "created the lease")
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            renew_raw = spec.get("renewTime") or ""
            if self._observed != (holder, renew_raw):
                self._observed = (holder, renew_raw)
                self._observed_at = mono
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            # expired: no renewal seen for a lease duration on our monotonic clock (client-go's
            # rule; the holder's renewTime is its wall clock, and ours may have stepped)
            if holder and holder != self.identity and mono < self._observed_at + duration:
                self._lost(f"held by {holder}")
                return False
            transitions = int(spec.get("leaseTransitions") or 0)
            if holder == self.identity:
                acquire = parse_micro_time(spec.get("acquireTime")) or now
                note = "renewed"
            else:
                transitions += 1
                acquire = now
                note = f"took over from {holder or 'nobody'}"
            lease["spec"] = {**spec, **self._spec(now, acquire, transitions)}
            self.client.update(lease_path, lease)  # carries resourceVersion: 409 if raced
            return self._won(now, mono, note)
        except ApiError as exc:
            if exc.conflict:
                log.info("lease %s/%s: lost a race (409)", self.namespace, self.name)
            else:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            if not self.is_leader():
                self._lost(str(exc))
            return False

    def _won(self, now: float, mono: float, note: str) -> bool:
        if not self.is_leader(mono):
            self.transitions += 1
            log.info("lease %s/%s: %s is the leader (%s)", self.namespace, self.name,
                     self.identity, note)
        self._renewed_at = mono
        self._observed = (self.identity, micro_time(now))
        self._observed_at = mono
        return True

    def _lost(self, why: str) -> None:
        if self._renewed_at is not None:
            log.info("lease %s/%s: %s stops leading (%s)", self.namespace, self.name,
                     self.identity, why)
        self._renewed_at = None

    def release(self) -> None:
        """Hand the Lease back (graceful shutdown) so a successor need not wait for expiry."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        lease_path = path("Lease", self.namespace, self.name)
        try:
            lease = self.client.get(lease_path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update({"holderIdentity": "", "leaseDurationSeconds": 1})
            lease["spec"] = spec
            self.client.update(lease_path, lease)
        except ApiError as exc:
            log.warning("lease %s/%s: release failed: %s", self.namespace, self.name, exc)
