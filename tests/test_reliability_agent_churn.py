"""Thousands of short-lived cgroups in bursts, with a probe map far too small (issue 10).

Beyond tests/test_agent_churn.py (50/s, one process moving through them): here 3,000 cgroups are
created in bursts of 200 as fast as the shell can (each burst: 200 mkdirs, 200 processes started
at once, one per cgroup, each spinning briefly and exiting, then 200 rmdirs), while the agent runs
with `--max-cgroups 64`. Two hundred cgroups waiting at once cannot fit in 64 entries: the map
fills. Shown: the agent never stops serving (every scrape parses, no sample error), map-full is
counted and the map never exceeds its capacity, the series return to their baseline one window
after the churn, and the agent's RSS stays bounded. `pytest -s` prints a `burst churn:` line."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from agent_helpers import AgentProcess, one_value
from conftest import require_root

from runqscale.probes.model import Hierarchy
from runqscale.validation.sandbox import PERIODIC, Sandbox

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

BURST, BURSTS, MAX_CGROUPS, WINDOW = 200, 15, 64, 5.0
RSS_LIMIT_MB = 96.0  # the DaemonSet's memory request (deploy/base/agent-daemonset.yaml)

# One burst: mkdir N cgroups, start one process in each (it enters its cgroup, spins, exits),
# wait for all of them, remove the cgroups. $1 = parent dir, $2 = first index, $3 = N.
BURST_SH = r"""
set -e
parent=$1; first=$2; n=$3
last=$((first + n - 1))
for i in $(seq "$first" "$last"); do mkdir "$parent/c$i"; done
for i in $(seq "$first" "$last"); do
  ( echo $BASHPID > "$parent/c$i/cgroup.procs"; j=0
    while [ $j -lt 400 ]; do j=$((j+1)); done ) &
done
wait
for i in $(seq "$first" "$last"); do rmdir "$parent/c$i"; done
"""


def _series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_burst_churn_with_a_full_map() -> None:
    require_root()
    with Sandbox(Hierarchy.V1_CPU, name="rqs-burst") as sb:
        steady = sb.group("steady")
        sb.spawn(steady, code=PERIODIC.format(busy=0.0005, sleep=0.005))
        parent = sb.root + sb.base + "/churn"
        os.makedirs(parent)
        agent = AgentProcess("--cgroup", sb.base, "--max-cgroups", str(MAX_CGROUPS),
                             interval="0.5s", window=f"{WINDOW:g}s")
        try:
            time.sleep(2.0)
            baseline = _series(agent.scrape_text())
            s0 = agent.scrape()
            full0 = one_value(s0, "runqscale_agent_map_full_total")
            ev0 = one_value(s0, "runqscale_agent_events_total")
            rss0 = _rss_mb(agent.proc.pid)
            rss_peak, peak_containers, peak_entries, scrapes = rss0, 0.0, 0.0, 0
            created, t0 = 0, time.monotonic()
            for b in range(BURSTS):
                sh = subprocess.Popen(["bash", "-c", BURST_SH, "burst", parent, str(created),
                                       str(BURST)])
                while sh.poll() is None:
                    s = agent.scrape()  # raises on any HTTP or parse error
                    scrapes += 1
                    peak_containers = max(peak_containers,
                                          one_value(s, "runqscale_agent_containers"))
                    entries = one_value(s, "runqscale_agent_map_entries")
                    assert entries <= MAX_CGROUPS
                    peak_entries = max(peak_entries, entries)
                    rss_peak = max(rss_peak, _rss_mb(agent.proc.pid))
                    time.sleep(0.2)
                assert sh.returncode == 0, f"burst {b} failed"
                created += BURST
            churn_s = time.monotonic() - t0
            t_end = time.monotonic()
            back_after = None
            while time.monotonic() - t_end < WINDOW + 5:
                rss_peak = max(rss_peak, _rss_mb(agent.proc.pid))
                if _series(agent.scrape_text()) == baseline:
                    back_after = time.monotonic() - t_end
                    break
                time.sleep(0.25)
            end = agent.scrape()
            rss_end = _rss_mb(agent.proc.pid)
            full = one_value(end, "runqscale_agent_map_full_total") - full0
            events = one_value(end, "runqscale_agent_events_total") - ev0
            errors = one_value(end, "runqscale_agent_sample_errors_total")
            assert agent.proc.poll() is None, "the agent died"
        finally:
            agent.stop()
    print(f"\nburst churn: {created} cgroups (bursts of {BURST}, one process each) created and "
          f"removed in {churn_s:.1f} s = {created / churn_s:.0f} cgroups/s; --max-cgroups "
          f"{MAX_CGROUPS}: map-full drops {full:.0f} (events counted {events:.0f}), peak map "
          f"entries {peak_entries:.0f}/{MAX_CGROUPS}; {scrapes} scrapes, 0 failed; sample errors "
          f"{errors:.0f}; peak containers {peak_containers:.0f}; series back to baseline "
          f"{baseline} after {back_after if back_after is None else round(back_after, 2)} s "
          f"(window {WINDOW:g} s); RSS {rss0:.1f} -> peak {rss_peak:.1f} -> end {rss_end:.1f} MB")
    assert created == BURST * BURSTS
    assert errors == 0
    assert full > 0, "the map never filled: the test did not test a full map"
    assert back_after is not None and back_after <= WINDOW + 2.0
    assert rss_peak < RSS_LIMIT_MB
