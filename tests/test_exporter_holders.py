"""Who held the CPU, end to end: the real probe in the real `runqscale agent`, its /metrics, and a
real Prometheus evaluating the noisy-neighbour recording rule.

On one CPU a "victim" task shares the CPU with a heavy neighbour hog of another cgroup; on another
CPU a "crowded" cgroup runs three hogs (more threads than CPUs). The exported
`runqscale_runqueue_wait_by_holder_seconds_total` must put the victim's wait behind
`other_cgroup` and the crowded one's behind `same_cgroup` (the opposite actions: spread vs
resize), its four series must add up to the wait counter, and the recording rule
`workload:runqscale_runqueue_wait_by_holder_seconds:other_cgroup_ratio_rate5m` must say the same.
"""

from __future__ import annotations

import os
import time

import pytest
from agent_helpers import AgentProcess
from conftest import require_root

from runqscale.exporter import metrics as m
from runqscale.probes.model import Hierarchy
from runqscale.validation.sandbox import Sandbox

pytestmark = [pytest.mark.kernel, pytest.mark.prometheus]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "deploy", "prometheus", "runqscale-rules.yaml")
RATIO_RULE = "workload:runqscale_runqueue_wait_by_holder_seconds:other_cgroup_ratio_rate5m"
HEAVY_SHARES = 16384  # 16x the default weight, among the sandbox's own cgroups
SANDBOX_SHARES = 262144  # the maximum: the sandbox wins its CPUs over the machine's other load


def _shares(path: str, value: int) -> None:
    with open(os.path.join(path, "cpu.shares"), "w") as f:
        f.write(str(value))


def _move(dirs: list[str], pid: int) -> None:
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid))


def _held(agent: AgentProcess) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """cgroup -> holder -> exported seconds, and cgroup -> the wait counter, from one scrape."""
    fams = agent.scrape()
    held: dict[str, dict[str, float]] = {}
    for s in fams.get(m.RUNQ_WAIT_BY_HOLDER.name, []):
        held.setdefault(s.labels["cgroup"], {})[s.labels["holder"]] = s.value
    wait = {s.labels["cgroup"]: s.value for s in fams[m.RUNQ_WAIT.name]}
    return held, wait


def _shares_of(delta: dict[str, float]) -> dict[str, float]:
    total = sum(delta.values())
    return {h: v / total for h, v in delta.items()} if total else {}


def test_neighbour_and_own_threads_are_opposite_in_the_exported_counter(prometheus) -> None:
    require_root()
    cpus = sorted(os.sched_getaffinity(0))
    with Sandbox(Hierarchy.V1_CPU, name="rq-holders-export") as sb:
        _shares(sb.root + sb.base, SANDBOX_SHARES)
        victim, neighbour = sb.group("victim"), sb.group("neighbour")
        crowded = sb.group("crowded")
        for g in (neighbour, crowded):
            _shares(g.dirs[0], HEAVY_SHARES)
        agent = AgentProcess("--cgroup", sb.base)
        prom = None
        try:
            prom = prometheus([agent.addr], rule_files=[RULES])
            # the hogs' cgroups outweigh everything outside the sandbox: the agent and
            # Prometheus get a heavy cgroup beside them, or their 1 s scrapes time out under
            # load (CI saw no sample at all) and the recording rule has nothing to evaluate
            observers = sb.group("observers")
            _shares(observers.dirs[0], HEAVY_SHARES)
            for pid in (agent.proc.pid, prom.proc.pid):
                _move(observers.dirs, pid)
            pinned = [(sb.spawn(victim), cpus[0]), (sb.spawn(neighbour), cpus[0])]
            pinned += [(sb.spawn(crowded), cpus[-1]) for _ in range(3)]
            for p, cpu in pinned:
                os.sched_setaffinity(p.pid, {cpu})
            time.sleep(2.0)  # the agent has seen both cgroups wait
            before, _ = _held(agent)
            time.sleep(4.0)
            after, wait = _held(agent)
            rel = {"victim": victim.rel, "crowded": crowded.rel}
            delta = {k: {h: after[r][h] - before.get(r, {}).get(h, 0.0)
                         for h in m.RUNQ_WAIT_HOLDERS} for k, r in rel.items()}
            sv, sc = _shares_of(delta["victim"]), _shares_of(delta["crowded"])
            report = (f"victim {sv} ({sum(delta['victim'].values()):.2f} s), crowded {sc} "
                      f"({sum(delta['crowded'].values()):.2f} s)")
            print(report)
            assert sum(delta["victim"].values()) > 0.1 and sum(delta["crowded"].values()) > 0.1, \
                f"no contention: {report}"
            # the exported split adds up to the exported wait, series by series
            for r in rel.values():
                assert sorted(after[r]) == sorted(m.RUNQ_WAIT_HOLDERS)
                assert sum(after[r].values()) == pytest.approx(wait[r], rel=1e-9), r
            assert sv["other_cgroup"] > 0.6 and sv["other_cgroup"] > 3 * sv["same_cgroup"], report
            assert sc["same_cgroup"] > 0.6 and sc["same_cgroup"] > 3 * sc["other_cgroup"], report
            for p, _ in pinned:  # the 5 min rate keeps the waits; the rules need no more load
                p.kill()
                p.wait()

            # Prometheus evaluates the recording rule on the scraped series (outside Kubernetes
            # the workload is the cgroup path); give it a few evaluations
            ratios: dict[str, float | None] = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                ratios = {k: prom.value(f'{RATIO_RULE}{{workload="{r}"}}') for k, r in rel.items()}
                if None not in ratios.values():
                    break
                time.sleep(1.0)
            print(f"noisy-neighbour share (recording rule): {ratios}")
            assert ratios["victim"] is not None and ratios["crowded"] is not None, (
                f"targets {prom.targets_up()}; {prom.logs()}")
            assert ratios["victim"] > 0.6 and ratios["crowded"] < 0.2, ratios
        finally:
            agent.stop()
            if prom is not None and prom.proc.poll() is None:  # out, so the sandbox can go
                _move(sb.roots, prom.proc.pid)
