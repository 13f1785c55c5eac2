"""`runqscale status`: the opted-in workloads (annotation `runqscale.io/policy`) as the cluster has
them now, beside the last decision the recommendations log holds for each — replicas and CPU now
vs recommended, the signal and the reason of that decision, and how long ago it was.

Pure: rows from API objects and log records; `table` renders them for people, `Row.to_json` for
machines (`--json`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich import box
from rich.table import Table

from runqscale import tables
from runqscale.scaler.actuators.kubernetes import template_cpu
from runqscale.scaler.k8s import annotations
from runqscale.scaler.model import Recommendation


@dataclass(frozen=True)
class Row:
    kind: str
    namespace: str
    name: str
    policy: str
    replicas: int | None
    ready_replicas: int | None
    cpu_request_cores: float | None  # per replica, from the pod template
    cpu_limit_cores: float | None
    last: Recommendation | None  # the newest decision for this workload in the log
    event: Mapping[str, Any] | None = None  # the scaler's newest Event on it (no log needed)

    def age_seconds(self, now: float) -> float | None:
        if self.last is not None:
            return max(0.0, now - self.last.ts)
        if self.event is not None:
            return max(0.0, now - event_time(self.event))
        return None

    def to_json(self, now: float) -> dict[str, Any]:
        last = None
        if self.last is not None:
            r = self.last
            last = {"ts": r.ts, "age_seconds": self.age_seconds(now), "policy": r.policy,
                    "action": r.action, "reason": r.reason, "dry_run": r.dry_run,
                    "applied": r.applied, "error": r.error,
                    "signals": {k: _finite(v) for k, v in r.signals.items()},
                    "recommended": r.recommended.to_json()}
        return {"workload": {"namespace": self.namespace, "kind": self.kind, "name": self.name},
                "policy": self.policy,
                "current": {"replicas": self.replicas, "ready_replicas": self.ready_replicas,
                            "cpu_request_cores": self.cpu_request_cores,
                            "cpu_limit_cores": self.cpu_limit_cores},
                "last_decision": last,
                "last_event": None if self.event is None else {
                    "type": self.event.get("type"), "reason": self.event.get("reason"),
                    "message": self.event.get("message"), "count": self.event.get("count"),
                    "ts": event_time(self.event), "age_seconds": max(0.0, now - event_time(
                        self.event))}}


def _finite(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


def event_time(ev: Mapping[str, Any]) -> float:
    """An Event's last occurrence (lastTimestamp, else eventTime / firstTimestamp), Unix s."""
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        v = ev.get(key)
        if v:
            try:
                return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def newest_events(items: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping]:
    """(kind, namespace, name) -> the newest of these Events about it."""
    out: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for ev in items:
        io = ev.get("involvedObject") or {}
        key = (str(io.get("kind")), str(io.get("namespace")), str(io.get("name")))
        if key not in out or event_time(ev) >= event_time(out[key]):
            out[key] = ev
    return out


def rows(objects: Iterable[tuple[str, Mapping[str, Any]]],
         recs: Sequence[Recommendation],
         events: Iterable[Mapping[str, Any]] = ()) -> list[Row]:
    """One row per opted-in object (kind, API object), sorted by namespace/name, with its
    newest log decision and its newest scaler Event."""
    evs = newest_events(events)
    newest: dict[tuple[str, str, str], Recommendation] = {}
    for r in recs:
        key = (r.workload.kind, r.workload.namespace, r.workload.name)
        if key not in newest or r.ts >= newest[key].ts:
            newest[key] = r
    out = []
    for kind, obj in objects:
        md = obj.get("metadata") or {}
        policy = (md.get("annotations") or {}).get(annotations.POLICY)
        if policy is None:
            continue
        req, lim = template_cpu(obj)
        status = obj.get("status") or {}
        out.append(Row(kind, md["namespace"], md["name"], policy.strip(),
                       (obj.get("spec") or {}).get("replicas"), status.get("readyReplicas", 0),
                       req, lim, newest.get((kind, md["namespace"], md["name"])),
                       evs.get((kind, md["namespace"], md["name"]))))
    return sorted(out, key=lambda r: (r.namespace, r.name, r.kind))


def _cores(v: float | None) -> str:
    return "-" if v is None else f"{v:g}" if v >= 1 else f"{v * 1000:.0f}m"


def _now_vs(now: str, rec: str | None) -> str:
    """`now`, or `now→rec` when the recommendation differs."""
    return now if rec is None or rec == now else f"{now}→{rec}"


def signal_text(signals: Mapping[str, float | None]) -> str:
    """The signals a decision read, short: run-queue p95, CPU used, throttled share."""
    parts = []
    p95 = signals.get("runq_p95_seconds")
    if p95 is not None and math.isfinite(p95):
        parts.append(f"p95 {p95 * 1e3:.1f}ms")
    cpu = signals.get("cpu_usage_cores")
    if cpu is not None and math.isfinite(cpu):
        parts.append(f"cpu {cpu:.2f}")
    thr = signals.get("throttled_ratio")
    if thr is not None and math.isfinite(thr) and thr > 0:
        parts.append(f"thr {thr:.0%}")
    return ", ".join(parts) or "-"


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def reason_text(r: Row) -> str:
    if r.last is not None:
        return r.last.error or r.last.reason
    if r.event is not None:
        return str(r.event.get("message") or "")
    return "no decision yet"


def table(rs: Sequence[Row], now: float, with_reason: bool = True) -> Table:
    """NAMESPACE/NAME, POLICY, REPLICAS and CPU REQ/LIM (now→recommended), SIGNAL (run-queue
    p95, CPU cores used, throttled share), LAST decision, AGE and REASON (the one that wraps;
    left out for narrow terminals, where the caller prints reasons below)."""
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for head, right in (("NAMESPACE/NAME", False), ("POLICY", False), ("REPLICAS", True),
                        ("CPU REQ/LIM", True), ("SIGNAL", False), ("LAST", False),
                        ("AGE", True), ("REASON", False))[:None if with_reason else -1]:
        t.add_column(head, justify="right" if right else "left", no_wrap=head != "REASON",
                     min_width=24 if head == "REASON" else None)
    for r in rs:
        rec = r.last.recommended if r.last else None
        name = f"{r.namespace}/{r.name}" + ("" if r.kind == "Deployment" else f" ({r.kind})")
        cpu_now = f"{_cores(r.cpu_request_cores)}/{_cores(r.cpu_limit_cores)}"
        cpu_rec = None
        if rec is not None:
            req = r.cpu_request_cores if rec.cpu_request_cores is None else rec.cpu_request_cores
            lim = r.cpu_limit_cores if rec.cpu_limit_cores is None else rec.cpu_limit_cores
            cpu_rec = f"{_cores(req)}/{_cores(lim)}"
        last = "-"
        if r.last is not None:
            last = r.last.action + (" (dry-run)" if r.last.dry_run else
                                    "" if r.last.applied else " (not applied)")
            if r.last.error:
                last += " error"
        elif r.event is not None:  # no log: what the in-cluster scaler said on the workload
            last = f"{r.event.get('reason')} (event)"
        cells = [
            name, r.policy,
            _now_vs("-" if r.replicas is None else str(r.replicas),
                    None if rec is None else str(rec.replicas)),
            _now_vs(cpu_now, cpu_rec),
            signal_text(r.last.signals) if r.last else "-", last,
            age_text(r.age_seconds(now))]
        tables.add_row(t, *cells, *([reason_text(r)] if with_reason else []))
    return t
