"""Apply a Recommendation to a Kubernetes workload (Deployment or StatefulSet).

- Replicas: the `scale` subresource (GET, then PUT with the read resourceVersion; 409 Conflict ->
  re-read and retry), so only `deployments/scale` / `statefulsets/scale` rights are needed.
- CPU: in-place resize of each running pod through the `pods/resize` subresource (Kubernetes
  >= 1.33) when every pod allows it: the pod's QoS class must not change (the API server refuses
  that), the pod is bound and not terminating. Otherwise, or if the server refuses the resize
  (404: no subresource; 422: not resizable), the pod template is patched (a rollout).
  A per-replica CPU total is split over the containers in proportion to their current values.
  In-place resize leaves the pod template as it was: new replicas start at the template's size
  and the next decision resizes them (no rollout of the pods just resized).
- Safety: no action on a recommendation whose signals are older than `max_signal_age` (or from
  the future); dry-run (the default) sends every write with `dryRun=All`, so the API server
  validates and authorises it without persisting anything.

Throttling and server errors are retried by the client (`ApiClient`); an unreachable server ends
the attempt with an error in the result, never an exception out of `apply`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runqscale.scaler.actuators.base import ApplyResult
from runqscale.scaler.k8s.client import STRATEGIC_MERGE_PATCH, ApiClient, ApiError, path
from runqscale.scaler.k8s.quantity import format_cpu, parse_cpu
from runqscale.scaler.model import Recommendation, WorkloadRef

log = logging.getLogger(__name__)

SCALABLE_KINDS = ("Deployment", "StatefulSet")


# ------------------------------------------------------------------ reading workloads


def label_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector object as the `labelSelector` query string."""
    sel = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _cpu(resources: Mapping[str, Any] | None, which: str) -> float | None:
    v = ((resources or {}).get(which) or {}).get("cpu")
    return None if v is None else parse_cpu(v)


def template_cpu(obj: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Per-replica CPU request and limit (cores) of a workload's pod template (sum of containers;
    None if no container sets it)."""
    containers = obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    out = []
    for which in ("requests", "limits"):
        vals = [_cpu(c.get("resources"), which) for c in containers]
        present = [v for v in vals if v is not None]
        out.append(sum(present) if present else None)
    return out[0], out[1]


def split(total: float | None, current: Sequence[float | None]) -> list[float | None]:
    """Split a per-replica total over containers in proportion to their current values (equal
    shares if any is unset); None keeps every container's value."""
    if total is None:
        return list(current)
    known = [c for c in current if c is not None]
    if len(known) == len(current) and sum(known) > 0:
        s = sum(known)
        return [total * c / s for c in known]
    return [total / len(current)] * len(current)


def qos_class(containers: Sequence[Mapping[str, Any]]) -> str:
    """The pod QoS class from its containers' resources (Kubernetes' rules, cpu and memory)."""
    requests_any = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests_any = True
        for r in ("cpu", "memory"):
            if r not in lim:
                guaranteed = False
            elif _q(req.get(r, lim[r])) != _q(lim[r]):
                guaranteed = False
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _q(v: Any) -> float | str:
    try:
        return parse_cpu(v)
    except ValueError:
        return str(v)


def _with_cpu(
    containers: Sequence[Mapping[str, Any]],
    requests: Sequence[float | None],
    limits: Sequence[float | None],
) -> list[dict[str, Any]]:
    """Strategic-merge container entries (by name) carrying only the new CPU values."""
    out = []
    for c, rq, lm in zip(containers, requests, limits, strict=True):
        res: dict[str, Any] = {}
        if rq is not None:
            res["requests"] = {"cpu": format_cpu(rq)}
        if lm is not None:
            res["limits"] = {"cpu": format_cpu(lm)}
        out.append({"name": c["name"], "resources": res})
    return out


def _merged(containers: Sequence[Mapping[str, Any]], patch: Sequence[Mapping[str, Any]]):
    out = []
    for c, p in zip(containers, patch, strict=True):
        res = {k: dict(v) for k, v in (c.get("resources") or {}).items()}
        for which, vals in p["resources"].items():
            res.setdefault(which, {}).update(vals)
        out.append({**c, "resources": res})
    return out


# ------------------------------------------------------------------ the actuator


class KubernetesActuator:
    def __init__(
        self,
        client: ApiClient,
        dry_run: bool = True,
        max_signal_age: float = 60.0,
        conflict_retries: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.dry_run = dry_run
        self.max_signal_age = max_signal_age
        self.conflict_retries = conflict_retries
        self.clock = clock

    def apply(self, rec: Recommendation) -> ApplyResult:
        """Apply one recommendation; never raises on API errors (they are in the result)."""
        if rec.action == "none":
            return ApplyResult(False, self.dry_run, "none", "nothing to change")
        age = self.clock() - rec.ts
        if age > self.max_signal_age or age < -5.0:
            return ApplyResult(
                False, self.dry_run, "none", "no action",
                f"signals are {age:.0f} s old (limit {self.max_signal_age:.0f} s): no action "
                "without fresh signals",
            )
        if rec.workload.kind not in SCALABLE_KINDS:
            return ApplyResult(False, self.dry_run, "none", "no action",
                               f"kind {rec.workload.kind} is not one of {SCALABLE_KINDS}")
        try:
            if rec.action in ("scale_out", "scale_in"):
                return self.set_replicas(rec.workload, rec.recommended.replicas)
            if rec.action == "resize":
                return self.set_cpu(
                    rec.workload, rec.recommended.cpu_request_cores,
                    rec.recommended.cpu_limit_cores,
                )
        except ApiError as exc:
            return ApplyResult(False, self.dry_run, "none", "API error", str(exc))
        return ApplyResult(False, self.dry_run, "none", f"action {rec.action} is not actuated")

    # ------------------------------------------------------------ replicas

    def set_replicas(self, ref: WorkloadRef, replicas: int) -> ApplyResult:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        scale_path = path(ref.kind, ref.namespace, ref.name, "scale")
        for attempt in range(1, self.conflict_retries + 1):
            scale = self.client.get(scale_path)  # carries metadata.resourceVersion
            current = int((scale.get("spec") or {}).get("replicas") or 0)
            if current == replicas:
                return ApplyResult(False, self.dry_run, "scale", f"already {replicas} replicas",
                                   attempts=attempt)
            scale.setdefault("spec", {})["replicas"] = replicas
            try:
                self.client.update(scale_path, scale, dry_run=self.dry_run)
            except ApiError as exc:
                if exc.conflict:
                    log.info("%s scale: 409 conflict, re-reading (attempt %d)", ref.key, attempt)
                    continue
                raise
            return ApplyResult(True, self.dry_run, "scale", f"replicas {current} -> {replicas}",
                               attempts=attempt)
        return ApplyResult(False, self.dry_run, "scale", "gave up",
                           f"409 conflict {self.conflict_retries} times in a row",
                           attempts=self.conflict_retries)

    # ------------------------------------------------------------ CPU

    def set_cpu(
        self, ref: WorkloadRef, request: float | None, limit: float | None
    ) -> ApplyResult:
        if request is None and limit is None:
            return ApplyResult(False, self.dry_run, "none", "no CPU size recommended")
        wl = self.client.get(path(ref.kind, ref.namespace, ref.name))
        pods = self._pods(ref.namespace, wl)
        why_not = self._in_place_blocker(pods, request, limit)
        if why_not is None:
            done, attempts = 0, 0
            for pod in pods:
                try:
                    attempts += self._resize_pod(pod, request, limit)
                    done += 1
                except ApiError as exc:
                    if exc.status in (404, 405, 422) and done == 0:
                        why_not = f"pods/resize refused ({exc.status} {exc.reason}: {exc.message})"
                        break
                    raise
            if why_not is None:
                return ApplyResult(True, self.dry_run, "resize",
                                   f"resized {done} pod(s) in place to request "
                                   f"{_fmt(request)} limit {_fmt(limit)} per replica",
                                   attempts=attempts)
        return self._patch_template(ref, request, limit, why_not)

    def _pods(self, namespace: str, wl: Mapping[str, Any]) -> list[dict[str, Any]]:
        sel = label_selector((wl.get("spec") or {}).get("selector"))
        if not sel:
            return []
        items = self.client.get(path("Pod", namespace), labelSelector=sel).get("items") or []
        return [
            p for p in items
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]

    def _in_place_blocker(
        self, pods: Sequence[Mapping[str, Any]], request: float | None, limit: float | None
    ) -> str | None:
        if not pods:
            return "no running pods to resize"
        for pod in pods:
            name = pod["metadata"]["name"]
            spec = pod.get("spec") or {}
            if not spec.get("nodeName"):
                return f"pod {name} is not bound to a node yet"
            containers = spec.get("containers") or []
            new = _merged(containers, self._container_patch(containers, request, limit))
            before, after = qos_class(containers), qos_class(new)
            if before != after:
                return f"pod {name} would change QoS class {before} -> {after}"
        return None

    @staticmethod
    def _container_patch(
        containers: Sequence[Mapping[str, Any]], request: float | None, limit: float | None
    ) -> list[dict[str, Any]]:
        reqs = split(request, [_cpu(c.get("resources"), "requests") for c in containers])
        lims = split(limit, [_cpu(c.get("resources"), "limits") for c in containers])
        return _with_cpu(containers, reqs, lims)

    def _resize_pod(
        self, pod: Mapping[str, Any], request: float | None, limit: float | None
    ) -> int:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        for attempt in range(1, self.conflict_retries + 1):
            containers = pod["spec"]["containers"]
            body = {
                "metadata": {"resourceVersion": pod["metadata"]["resourceVersion"]},
                "spec": {"containers": self._container_patch(containers, request, limit)},
            }
            try:
                self.client.patch(path("Pod", ns, name, "resize"), body,
                                  STRATEGIC_MERGE_PATCH, dry_run=self.dry_run)
                return attempt
            except ApiError as exc:
                if not exc.conflict:
                    raise
                log.info("pod %s/%s resize: 409 conflict, re-reading", ns, name)
                pod = self.client.get(path("Pod", ns, name))
        raise ApiError(409, "Conflict", f"pod {ns}/{name}: gave up after "
                       f"{self.conflict_retries} conflicts", "PATCH", "resize")

    def _patch_template(
        self, ref: WorkloadRef, request: float | None, limit: float | None, why: str | None
    ) -> ApplyResult:
        wl_path = path(ref.kind, ref.namespace, ref.name)
        for attempt in range(1, self.conflict_retries + 1):
            wl = self.client.get(wl_path)
            containers = wl["spec"]["template"]["spec"]["containers"]
            body = {
                "metadata": {"resourceVersion": wl["metadata"]["resourceVersion"]},
                "spec": {"template": {"spec": {
                    "containers": self._container_patch(containers, request, limit)}}},
            }
            try:
                self.client.patch(wl_path, body, STRATEGIC_MERGE_PATCH, dry_run=self.dry_run)
            except ApiError as exc:
                if exc.conflict:
                    continue
                raise
            return ApplyResult(True, self.dry_run, "template",
                               f"patched the pod template to request {_fmt(request)} limit "
                               f"{_fmt(limit)} per replica (rollout; in place not possible: "
                               f"{why})", attempts=attempt)
        return ApplyResult(False, self.dry_run, "template", "gave up",
                           f"409 conflict {self.conflict_retries} times in a row",
                           attempts=self.conflict_retries)


def _fmt(cores: float | None) -> str:
    return "unchanged" if cores is None else format_cpu(cores)
