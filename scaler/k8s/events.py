"""Kubernetes Events on workloads (core/v1), aggregated like client-go's recorder.

The first occurrence of (object, type, reason, message) creates an Event; a repeat patches its
`count` and `lastTimestamp`, so a bad annotation re-checked every period is one Event with a
growing count, not thousands. Recording is best effort: an API error is logged, never raised, so
an Event never blocks a scaling decision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runqscale.scaler.k8s.client import ApiClient, ApiError, path

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str
    uid: str = ""
    api_version: str = "apps/v1"

    @classmethod
    def of(cls, obj: Mapping[str, Any], kind: str, api_version: str = "apps/v1") -> ObjectRef:
        md = obj.get("metadata") or {}
        return cls(kind, md.get("namespace", ""), md.get("name", ""), md.get("uid", ""),
                   api_version)


class EventRecorder:
    def __init__(
        self,
        client: ApiClient,
        component: str = "runqscale-scaler",
        instance: str = "",
        clock: Callable[[], float] = time.time,
        max_cached: int = 4096,
    ) -> None:
        self.client = client
        self.component = component
        self.instance = instance
        self.clock = clock
        self.max_cached = max_cached
        self._seen: dict[tuple[str, ...], tuple[str, int]] = {}  # key -> (event name, count)
        self._lock = threading.Lock()  # the controller records from several threads

    def record(self, ref: ObjectRef, type_: str, reason: str, message: str) -> bool:
        """Create or bump the Event; False if the API refused or was unreachable."""
        key = (ref.namespace, ref.kind, ref.name, ref.uid, type_, reason, message)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
        try:
            if seen is not None:
                name, count = seen
                try:
                    self.client.patch(
                        path("Event", ref.namespace, name),
                        {"count": count + 1, "lastTimestamp": rfc3339(now)},
                    )
                    with self._lock:
                        self._seen[key] = (name, count + 1)
                    return True
                except ApiError as exc:
                    if not exc.not_found:  # expired by the API server's event TTL: recreate
                        raise
            name = f"{ref.name}.{int(now * 1e9):x}"
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ref.namespace},
                "involvedObject": {
                    "apiVersion": ref.api_version,
                    "kind": ref.kind,
                    "namespace": ref.namespace,
                    "name": ref.name,
                    "uid": ref.uid,
                },
                "type": type_,
                "reason": reason,
                "message": message[:1024],
                "count": 1,
                "firstTimestamp": rfc3339(now),
                "lastTimestamp": rfc3339(now),
                "source": {"component": self.component, "host": self.instance},
                "reportingComponent": self.component,
                "reportingInstance": self.instance,
            }
            self.client.create(path("Event", ref.namespace), body)
            with self._lock:
                if len(self._seen) >= self.max_cached:
                    self._seen.pop(next(iter(self._seen)))
                self._seen[key] = (name, 1)
            return True
        except ApiError as exc:
            log.warning("event %s on %s/%s not recorded: %s", reason, ref.namespace, ref.name, exc)
            return False
