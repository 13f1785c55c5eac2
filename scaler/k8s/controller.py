"""The scaler's Kubernetes loop, thin: list opted-in workloads, match signals, decide, actuate.

One `step()`:
1. not the leader -> nothing;
2. list Deployments and StatefulSets; those with `runqscale.io/policy` opted in; a bad annotation
   is a Warning Event on that workload (one line naming the annotation and the fix) and that
   workload alone is skipped;
3. per workload, when its policy is due: the signals in (now - window, now]; none, or the newest
   older than `max_signal_age` -> no decision (Warning Event `NoFreshSignals`);
4. current size from the API object (spec.replicas, pod template CPU), the policy decides, the
   actuator applies (dry-run by default), and an Event records each decision that changes something.

API errors end the step without any action (the next step starts over from fresh reads); nothing
here raises out of `step()` on an unreachable API server or Prometheus.

Time: each policy's period is timed on the monotonic clock, and the samples go through a
WallClockGuard (runqscale.scaler.clock), so a wall-clock step neither stalls the loop nor lets a
policy's windows and cool-downs be judged in the wrong time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from runqscale.scaler.actuators.kubernetes import (
    SCALABLE_KINDS,
    KubernetesActuator,
    template_cpu,
)
from runqscale.scaler.k8s import annotations
from runqscale.scaler.k8s.client import ApiClient, ApiError, path
from runqscale.scaler.k8s.events import NORMAL, WARNING, EventRecorder, ObjectRef
from runqscale.scaler.k8s.leader import LeaderElector
from runqscale.scaler.model import (
    CurrentState,
    Recommendation,
    Sample,
    ScalerConfig,
    SignalWindow,
    WorkloadRef,
)
from runqscale.scaler.policies import POLICIES
from runqscale.scaler.routine import DecisionRoutine, PolicyError
from runqscale.scaler.selfmetrics import ScalerMetrics

log = logging.getLogger(__name__)

REASONS = {"scale_out": "ScaleOut", "scale_in": "ScaleIn", "resize": "Resize"}


@dataclass(frozen=True)
class Outcome:
    """One workload's result in one step (what the JSON log and the tests read)."""

    ts: float
    workload: str
    kind: str
    identity: str
    status: str  # decided | invalid | no-signals | error | deferred | applying (intent)
    action: str = "none"
    applied: bool = False
    dry_run: bool = True
    method: str = "none"
    replicas: tuple[int, int] | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["replicas"] = list(self.replicas) if self.replicas else None
        return {"event": "outcome", **d}


Source = Callable[[float], Sequence[Sample]]


class Controller:
    def __init__(
        self,
        client: ApiClient,
        source: Source,
        actuator: KubernetesActuator,
        recorder: EventRecorder,
        defaults: ScalerConfig,
        identity: str,
        elector: LeaderElector | None = None,
        namespaces: Sequence[str] = (),
        window_seconds: float = 300.0,
        max_signal_age: float = 60.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        step_budget_seconds: float = 30.0,
        error_backoff_cap: float = 60.0,
        on_outcome: Callable[[Outcome], None] | None = None,
        workers: int = 4,
        log_path: str | None = None,
        metrics: ScalerMetrics | None = None,
        affinity_period_seconds: float = 300.0,
    ) -> None:
        self.client = client
        self.source = source
        self.actuator = actuator
        self.recorder = recorder
        self.defaults = defaults
        self.identity = identity
        self.elector = elector
        self.namespaces = tuple(namespaces)
        self.window_seconds = window_seconds
        self.max_signal_age = max_signal_age
        self.clock = clock
        self.monotonic = monotonic
        self.step_budget = step_budget_seconds
        self.error_backoff_cap = error_backoff_cap
        # called with each outcome as soon as it is known, and with an "applying" outcome just
        # before each API write: a kill -9 between the write and its outcome line then leaves
        # the intent in the log (a step's outcomes printed at its end would all be lost)
        self.on_outcome = on_outcome
        self._report_lock = threading.Lock()
        self._pool = (ThreadPoolExecutor(workers, thread_name_prefix="workload")
                      if workers > 1 else None)
        self.metrics = metrics
        # the one decision routine: policy state, periods, backoff, clock guard, the log,
        # SHOWAR's affinity and spread; this class only reads the cluster and reports
        self.routine = DecisionRoutine(
            actuator, log_path=log_path, metrics=metrics,
            affinity_period_seconds=affinity_period_seconds,
            error_backoff_cap_seconds=error_backoff_cap, on_applying=self._applying)
        self.guard = self.routine.guard
        self._showar: dict[WorkloadRef, SignalWindow] = {}  # this step's showar windows

    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader()

    # ------------------------------------------------------------------ reads

    def _list(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for kind in SCALABLE_KINDS:
            for ns in self.namespaces or (None,):
                items = self.client.get(path(kind, ns)).get("items") or []
                out += [(kind, o) for o in items]
        return out

    @staticmethod
    def _by_workload(samples: Iterable[Sample]) -> dict[tuple[str, str], list[Sample]]:
        by: dict[tuple[str, str], list[Sample]] = {}
        for s in samples:
            by.setdefault((s.workload.namespace, s.workload.name), []).append(s)
        return by

    # ------------------------------------------------------------------ one step

    def step(self) -> list[Outcome]:
        leading = self.leading()
        if self.metrics is not None:
            self.metrics.leader.set(1 if leading else 0)
        if not leading:
            return []
        started = time.monotonic()
        try:
            return self._step()
        finally:
            if self.metrics is not None:
                self.metrics.step_duration.observe(time.monotonic() - started)

    def _step(self) -> list[Outcome]:
        now, mono = self.clock(), self.monotonic()
        note = self.routine.observe_clock(now, mono)
        if note:
            log.warning("%s", note)
        try:
            objects = self._list()
        except ApiError as exc:
            self._error("api")
            log.warning("listing workloads failed, no action this step: %s", exc)
            return [Outcome(now, "*", "*", self.identity, "error", message=str(exc))]
        try:
            samples = self._by_workload(self.source(now))
        except Exception as exc:  # any source failure means: no signals, no action
            self._error("signals")
            log.warning("reading signals failed, no action this step: %s", exc)
            return [Outcome(now, "*", "*", self.identity, "error", message=f"signals: {exc}")]
        todo = self._opted_in(objects)
        deferred = object()

        def one(item: tuple[str, dict[str, Any]]) -> Outcome | object | None:
            if not self.leading():  # lost the lease mid-step: nothing more
                return None
            if self.monotonic() - mono > self.step_budget:
                # API storms (429 with Retry-After, timeouts) must not stretch one step without
                # bound; the ones left go first next step (least recently decided first)
                return deferred
            outcome = self._workload(item[0], item[1], samples, now, mono)
            if outcome is not None:
                self._report(outcome)
            return outcome

        # workloads are independent and their time is API round trips: a few in flight at once
        # keep a step over a thousand of them inside one period (the client keeps one
        # connection per thread); results keep the least-recently-decided order
        if self._pool is None or len(todo) < 2:
            results = [one(x) for x in todo]
        else:
            results = list(self._pool.map(one, todo))
        outcomes = [r for r in results if isinstance(r, Outcome)]
        left = sum(r is deferred for r in results)
        if left:
            msg = (f"step budget {self.step_budget:g} s spent: {left} workloads wait for the "
                   "next step")
            log.warning("%s", msg)
            outcomes.append(Outcome(now, "*", "*", self.identity, "deferred", message=msg))
        if self.leading():
            by_ref = {WorkloadRef(o["metadata"]["namespace"], o["metadata"]["name"], k): o
                      for k, o in todo}
            for outcome in self._extras(by_ref, now):
                self._report(outcome)
                outcomes.append(outcome)
        return outcomes

    def _report(self, outcome: Outcome) -> None:
        if self.on_outcome is not None:
            with self._report_lock:  # one whole line per outcome, whichever thread knows it
                self.on_outcome(outcome)

    def _opted_in(self, objects: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict]]:
        """Opted-in workloads, least recently decided first (never decided: first of all)."""
        def last(item: tuple[str, dict[str, Any]]) -> float:
            md = item[1]["metadata"]
            last = self.routine.last_decided(
                WorkloadRef(str(md.get("namespace")), str(md.get("name")), item[0]))
            return -math.inf if last is None else last

        opted = [(k, o) for k, o in objects
                 if annotations.POLICY in ((o.get("metadata") or {}).get("annotations") or {})]
        return sorted(opted, key=last)

    def _workload(
        self,
        kind: str,
        obj: Mapping[str, Any],
        samples: Mapping[tuple[str, str], list[Sample]],
        now: float,
        mono: float,
    ) -> Outcome | None:
        md = obj["metadata"]
        ns, name = md["namespace"], md["name"]
        ref = ObjectRef.of(obj, kind)
        key = f"{ns}/{name}"
        try:
            spec = annotations.parse(md.get("annotations"), self.defaults, tuple(POLICIES))
        except annotations.AnnotationError as exc:
            self.recorder.record(ref, WARNING, "InvalidAnnotation", str(exc))
            return Outcome(now, key, kind, self.identity, "invalid", message=str(exc))
        assert spec is not None
        policy = POLICIES[spec.policy]
        wref = WorkloadRef(ns, name, kind)
        if not self.routine.due(wref, policy, spec.config, mono, wall=now):
            return None
        # after a backward clock step, samples up to the guard's mark may predate it
        lo = max(now - self.window_seconds, self.guard.hold_until)
        mine = [s for s in samples.get((ns, name), []) if lo < s.ts <= now + 5]
        if not mine or now - max(s.ts for s in mine) > self.max_signal_age:
            age = "none" if not mine else f"newest {now - max(s.ts for s in mine):.0f} s old"
            msg = (f"no fresh signals for {kind} {key} ({age}; limit "
                   f"{self.max_signal_age:.0f} s): no decision; check the agent and Prometheus")
            self.recorder.record(ref, WARNING, "NoFreshSignals", msg)
            return Outcome(now, key, kind, self.identity, "no-signals", message=msg)
        # the newest sample gets the replica counts the API object holds (spec and ready):
        # showar measures its start-up delay from them, decision to Ready
        status = obj.get("status") or {}
        spec_n = (obj.get("spec") or {}).get("replicas")
        mine = sorted(mine, key=lambda s: s.ts)
        if spec_n is not None:
            mine[-1] = replace(mine[-1], replicas=int(spec_n),
                               ready_replicas=int(status.get("readyReplicas") or 0))
        window = SignalWindow.from_samples([replace(s, workload=wref) for s in mine])
        req, lim = template_cpu(obj)
        current = CurrentState(int((obj.get("spec") or {}).get("replicas") or 0), req, lim)
        try:
            decision = self.routine.decide(window, current, policy, spec.config, mono,
                                           act=self.leading())
        except OSError as exc:  # the log could not be written: the decision still stands
            self._error("log")
            log.warning("recommendations log: %s", exc)
            return Outcome(now, key, kind, self.identity, "error", message=f"log: {exc}")
        except PolicyError as exc:  # a policy's bug on one window must not stop the others
            self._error("policy")
            log.warning("%s %s: %s", kind, key, exc, exc_info=exc.__cause__)
            self.recorder.record(ref, WARNING, "PolicyFailed", str(exc))
            return Outcome(now, key, kind, self.identity, "error", message=str(exc))
        if decision is None:
            return None
        if spec.policy == "showar":
            policy_window = self.guard.policy_window(window)
            if policy_window is not None:
                with self._report_lock:
                    self._showar[wref] = policy_window
        rec = decision.rec
        if rec.action == "none" or rec.action not in REASONS:
            return Outcome(now, key, kind, self.identity, "decided", rec.action,
                           dry_run=self.actuator.dry_run, message=rec.reason)
        result = decision.result
        if result is None:  # lost the lease before acting
            return None
        c, r = rec.current, rec.recommended
        size = _size(rec)
        mode = "dry-run" if result.dry_run else "applied"
        if result.error:
            msg = (f"{spec.policy}: {size} not applied: {result.error}; next attempt in "
                   f"{decision.backoff_seconds:g} s")
            self.recorder.record(ref, WARNING, "ActionFailed", msg)
        else:
            msg = (f"{spec.policy} ({mode}): {size} via {result.method}: {result.detail}; "
                   f"{rec.reason}")
            reason = REASONS[rec.action] + ("DryRun" if result.dry_run else "")
            self.recorder.record(ref, NORMAL, reason, msg)
        return Outcome(now, key, kind, self.identity, "error" if result.error else "decided",
                       rec.action, result.applied, result.dry_run, result.method,
                       (c.replicas, r.replicas), msg)

    def _applying(self, rec: Recommendation) -> None:
        """The intent, just before the routine's actuator writes (see on_outcome)."""
        c, r = rec.current, rec.recommended
        self._report(Outcome(self.clock(), rec.workload.key, rec.workload.kind, self.identity,
                             "applying", rec.action, dry_run=self.actuator.dry_run,
                             replicas=(c.replicas, r.replicas),
                             message=f"{rec.policy}: {_size(rec)}"))

    def _error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.error(kind)

    def _extras(self, objects: Mapping[WorkloadRef, Mapping[str, Any]], now: float
                ) -> list[Outcome]:
        """SHOWAR's affinity and spread recommendations over this step's showar workloads
        (logged by the routine; recorded as Events on the workload they name)."""
        wins = list(self._showar.values())
        self._showar = {}
        if not wins:
            return []
        current = {w.workload: CurrentState.from_window(w) for w in wins}
        try:
            recs = self.routine.extras(wins, current, self.defaults,
                                       max(w.now for w in wins), wall_now=now)
        except OSError as exc:
            self._error("log")
            log.warning("recommendations log: %s", exc)
            return []
        out = []
        for rec in recs:
            obj = objects.get(rec.workload)
            if obj is not None:
                self.recorder.record(ObjectRef.of(obj, rec.workload.kind), NORMAL,
                                     "AffinityRecommendation", rec.reason)
            out.append(Outcome(now, rec.workload.key, rec.workload.kind, self.identity,
                               "recommended", "affinity", dry_run=True, message=rec.reason))
        return out


def _size(rec: Recommendation) -> str:
    c, r = rec.current, rec.recommended
    return (f"{c.replicas}x{_c(c.cpu_request_cores)}/{_c(c.cpu_limit_cores)} -> "
            f"{r.replicas}x{_c(r.cpu_request_cores)}/{_c(r.cpu_limit_cores)}")


def _c(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
