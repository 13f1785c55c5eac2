"""Node pressure (beyond SHOWAR; a dry-run recommendation at first): spread pods off a hot node.

When the containers on one node wait long in run queues while other nodes are cool, adding
replicas may land them on the same hot node; moving pods helps. A node's heat is the median
run-queue p95 of the pods on it (median: one pathological pod does not make a node hot). A node
is hot when its heat is above `hot_factor` × target and at least `hot_factor` × the heat of the
coolest node; cool nodes are those at or below the target. From each hot node, the pods with the
largest CPU usage are proposed first (moving them relieves the node most), each to the coolest
node that has received the least CPU so far, at most `max_moves` moves per decision. Pods whose
node or p95 is unknown are left out. Output is deterministic (ties broken by name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from runqscale.scaler.model import CurrentState, PodSample, Recommendation, WorkloadRef


@dataclass(frozen=True)
class Move:
    workload: WorkloadRef
    pod: str
    from_node: str
    to_node: str
    from_heat_seconds: float
    to_heat_seconds: float
    cpu_usage_cores: float


def node_heat(pods: Sequence[tuple[WorkloadRef, PodSample]]) -> dict[str, float]:
    by_node: dict[str, list[float]] = {}
    for _, pod in pods:
        if pod.node is None or pod.runq_p95_seconds is None:
            continue
        by_node.setdefault(pod.node, []).append(pod.runq_p95_seconds)
    return {n: float(np.median(v)) for n, v in sorted(by_node.items())}


def moves(
    pods: Sequence[tuple[WorkloadRef, PodSample]],
    target_seconds: float,
    hot_factor: float = 2.0,
    max_moves: int = 2,
) -> list[Move]:
    heat = node_heat(pods)
    if len(heat) < 2:
        return []
    coolest = min(heat.values())
    hot = sorted(
        (
            n
            for n, h in heat.items()
            if h > hot_factor * target_seconds and h >= hot_factor * coolest
        ),
        key=lambda n: (-heat[n], n),
    )
    cool = [n for n, h in heat.items() if h <= target_seconds]
    if not hot or not cool:
        return []
    received = {n: 0.0 for n in cool}
    out: list[Move] = []
    for node in hot:
        cands = sorted(
            (
                (wl, p)
                for wl, p in pods
                if p.node == node and p.runq_p95_seconds is not None and not p.deleting
            ),
            key=lambda x: (-(x[1].cpu_usage_cores or 0.0), x[1].name),
        )
        for wl, pod in cands:
            if len(out) >= max_moves:
                return out
            dest = min(cool, key=lambda n: (received[n], heat[n], n))
            usage = pod.cpu_usage_cores or 0.0
            received[dest] += usage
            out.append(Move(wl, pod.name, node, dest, heat[node], heat[dest], usage))
    return out


def recommendations(
    pods: Sequence[tuple[WorkloadRef, PodSample]],
    current: Mapping[WorkloadRef, CurrentState],
    now: float,
    target_seconds: float,
    policy: str = "showar",
    hot_factor: float = 2.0,
    max_moves: int = 2,
) -> list[Recommendation]:
    """One `affinity` recommendation per proposed move, on the moved pod's workload."""
    out = []
    for mv in moves(pods, target_seconds, hot_factor, max_moves):
        cur = current.get(mv.workload, CurrentState(0))
        reason = (
            f"spread: move pod {mv.pod} ({mv.cpu_usage_cores:.3f} cores) from node {mv.from_node} "
            f"(median run-queue p95 {mv.from_heat_seconds * 1000:.2f} ms) to node {mv.to_node} "
            f"({mv.to_heat_seconds * 1000:.2f} ms); target {target_seconds * 1000:.2f} ms"
        )
        out.append(
            Recommendation(
                ts=now,
                workload=mv.workload,
                policy=policy,
                signals={
                    "node_runq_p95_seconds": mv.from_heat_seconds,
                    "dest_node_runq_p95_seconds": mv.to_heat_seconds,
                    "cpu_usage_cores": mv.cpu_usage_cores,
                },
                current=cur,
                recommended=cur,
                action="affinity",
                reason=reason,
            )
        )
    return out
