"""The emulated social network on the real kernel: one undersized service saturates under the
mixed workload, and runqscale's per-service run-queue p95 points at it while CPU usage points
elsewhere (issue 8).

The deployment is right-sized except for one service: every logic service gets a CPU limit of
about 1.3× what it uses at this load (floor 0.1 core), user-timeline-service gets ~0.55×. The
sizes are measured on the machine the test runs on (every service at 0.5 core first): fixed
sizes from one machine left the bottleneck at 0.8× its use on a faster one, throttled in only
29 % of its periods, and the test failed there. The
saturated service uses *less* CPU than home-timeline and post-storage (its quota caps it), so
ranking by CPU usage names other services; its utilisation is the highest but only by a small
factor. Its run-queue p95 is an order of magnitude above every other service's.
"""

from __future__ import annotations

import os

import pytest
from k8s_helpers import REPO

from runqscale.deathstarbench.emulation.cluster import (
    LOGIC_SERVICES,
    Cluster,
    ClusterConfig,
    need_binaries,
)
from runqscale.deathstarbench.emulation.socialgraph import load_edges
from runqscale.scaler.model import CurrentState

REED98 = REPO / "data/deathstarbench/socfb-Reed98.edges"
BOTTLENECK = "user-timeline-service"
RATE = 250.0  # requests/s of the 60/30/10 mix
RIGHT, STARVED = 1.3, 0.55  # limit / use measured unconstrained: every service, the bottleneck
# the small services get 0.1 core (Kubernetes' usual 100m): at 0.05, compose-post (0.033 used,
# bursty: it waits on the saturated service, then its replies arrive together) was throttled
# into a 72 ms p95 in one CI run, a knock-on effect of the bottleneck, not a second one
FLOOR = 0.1
MIN_QUOTA = 0.011  # cgroup v1 refuses a quota under 1 ms per 100 ms period

pytestmark = [pytest.mark.kernel, pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def probe():
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs and create cgroups")
    from runqscale.probes.backends import open_probe

    p, mounts, _ = open_probe("core", "v1", bpf_stats=False)
    yield p, mounts
    p.close()


def test_runqueue_p95_points_at_the_saturated_service_cpu_does_not(probe):
    missing = need_binaries()
    if missing:
        pytest.skip(missing)
    from runqscale.validation.dsb_bottleneck import profile

    p, mounts = probe
    with Cluster(p.hierarchy, mounts, ClusterConfig(cpu=0.5), load_edges(str(REED98))) as c:
        c.reset()
        use = profile(c, p, RATE, seconds=8)  # what each service uses here, unconstrained
        sizes = {s: max(FLOOR, RIGHT * use.services[s].cpu_cores) for s in LOGIC_SERVICES}
        sizes[BOTTLENECK] = max(MIN_QUOTA, STARVED * use.services[BOTTLENECK].cpu_cores)
        c.reset({s: CurrentState(1, cpu, cpu) for s, cpu in sizes.items()})
        prof = profile(c, p, RATE, seconds=12)
    print("\nunconstrained:\n" + use.table())
    print("\n" + prof.table())
    print(f"e2e: {prof.ok}/{prof.requests} ok, p99 {prof.p99_seconds}")
    by_runq = prof.rank("runq_p95_seconds")
    by_cpu = prof.rank("cpu_cores")
    b = prof.services[BOTTLENECK]
    others = [prof.services[s] for s in LOGIC_SERVICES if s != BOTTLENECK]
    worst_other = max(s.runq_p95_seconds or 0.0 for s in others)
    # the signal: the saturated service first, by an order of magnitude
    assert by_runq[0] == BOTTLENECK, prof.table()
    assert b.runq_p95_seconds is not None and b.runq_p95_seconds >= 10 * worst_other
    assert b.throttled_ratio > 0.5  # starved by its own limit: the scaler's "resize" case
    # CPU usage alone names other services: at least one uses 1.5× more CPU than it
    assert by_cpu[0] != BOTTLENECK, prof.table()
    assert prof.services[by_cpu[0]].cpu_cores >= 1.5 * b.cpu_cores, prof.table()
