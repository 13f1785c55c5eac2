"""Churn: 50 cgroups created and removed per second for 60 s, a process moving through them,
while /metrics is scraped every second. No error, the series count returns to its baseline
after one window, and attribution misses stay under 1 % of events."""

from __future__ import annotations

import os
import time

import pytest
from agent_helpers import AgentProcess, one_value, samples_for
from conftest import require_root

from runqscale.probes.model import Hierarchy
from runqscale.validation.sandbox import PERIODIC, Sandbox

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

RATE, SECONDS, LIFETIME = 50, 60.0, 1.0


def _series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def test_churn_50_per_second_for_60s() -> None:
    require_root()
    with Sandbox(Hierarchy.V1_CPU, name="rqs-churn") as sb:
        steady = sb.group("steady")
        sb.spawn(steady, code=PERIODIC.format(busy=0.0005, sleep=0.005))
        home = sb.group("home")
        worker = sb.spawn(home, code=PERIODIC.format(busy=0.0002, sleep=0.002))
        agent = AgentProcess("--cgroup", sb.base)
        try:
            time.sleep(2.5)
            base_text = agent.scrape_text()
            baseline = _series(base_text)
            s0 = agent.scrape()
            ev0 = one_value(s0, "runqscale_agent_events_total")
            miss0 = one_value(s0, "runqscale_agent_attribution_misses_total")

            live: list[tuple[float, list[str]]] = []
            churn_events: dict[str, float] = {}
            created = removed = scrapes = 0
            max_containers = 0.0
            t0 = time.monotonic()
            next_scrape = t0 + 1
            while (now := time.monotonic()) - t0 < SECONDS:
                rel = f"{sb.base}/churn/c{created}"
                dirs = [r + rel for r in sb.roots]
                for d in dirs:
                    os.makedirs(d)
                for d in dirs:  # the worker moves into the new cgroup
                    with open(os.path.join(d, "cgroup.procs"), "w") as f:
                        f.write(str(worker.pid))
                live.append((now, dirs))
                created += 1
                while live and now - live[0][0] >= LIFETIME:
                    for d in reversed(live.pop(0)[1]):
                        os.rmdir(d)  # empty: the worker has moved on
                    removed += 1
                if now >= next_scrape:
                    s = agent.scrape()  # raises on any HTTP or parse error
                    scrapes += 1
                    next_scrape += 1
                    max_containers = max(max_containers,
                                         one_value(s, "runqscale_agent_containers"))
                    for smp in samples_for(s, "runqscale_runqueue_latency_seconds_count"):
                        cg = smp.labels["cgroup"]
                        if "/churn/" in cg:
                            churn_events[cg] = max(churn_events.get(cg, 0), smp.value)
                time.sleep(max(0.0, t0 + created / RATE - time.monotonic()))
            for d in dirs_home(sb):
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(worker.pid))
            for _, dirs in live:
                for d in reversed(dirs):
                    os.rmdir(d)
                removed += 1

            time.sleep(10 + 2.5)  # one window plus a couple of intervals
            end = agent.scrape()
            end_series = _series(agent.scrape_text())
            ev = one_value(end, "runqscale_agent_events_total") - ev0
            misses = one_value(end, "runqscale_agent_attribution_misses_total") - miss0
            churn_total = sum(churn_events.values())
            print(f"churn: created {created}, removed {removed} in {SECONDS:.0f}s, "
                  f"{scrapes} scrapes, peak containers {max_containers:.0f}; series baseline "
                  f"{baseline} -> end {end_series}; events {ev:.0f}, misses {misses:.0f} "
                  f"({misses / max(ev, 1) * 100:.3f} % of all events, "
                  f"{misses / max(churn_total + misses, 1) * 100:.2f} % of churn-cgroup events "
                  f"{churn_total:.0f}); sample errors "
                  f"{one_value(end, 'runqscale_agent_sample_errors_total'):.0f}")
            assert created >= RATE * SECONDS * 0.95
            assert agent.proc.poll() is None
            assert one_value(end, "runqscale_agent_sample_errors_total") == 0
            assert end_series == baseline
            assert misses / ev < 0.01
        finally:
            agent.stop()


def dirs_home(sb: Sandbox) -> list[str]:
    return sb.groups["home"].dirs
