"""Real agent + real Prometheus: a quota-limited hog and a light neighbour in cgroups laid out
like kubelet pods, pod names from a fake kubelet. Prometheus's histogram_quantile over the
exported buckets agrees with the agent's own p95 gauge within one bucket, the neighbour stays
under 1 ms (a tenth of the hog's p95 in the emulated VM), and both carry the right labels; the
agent serves gzip (--gzip), which Prometheus asks for."""

from __future__ import annotations

import bisect
import gzip
import os
import time
import urllib.request

import pytest
from agent_helpers import AgentProcess, FakeKubelet, FakePod
from conftest import require_root
from probe_helpers import light_neighbour_bound, quota_hierarchy

from runqscale.exporter.buckets import LE_SECONDS
from runqscale.validation.sandbox import PERIODIC, Sandbox

pytestmark = [pytest.mark.kernel, pytest.mark.prometheus]


def _host_cpu_pressure() -> str:
    try:
        with open("/proc/pressure/cpu") as f:
            return f.readline().strip()
    except OSError:
        return "n/a"


def _bucket(v: float) -> int:
    return bisect.bisect_left(LE_SECONDS, v)


def test_prometheus_quantile_agrees_with_gauge_and_labels(prometheus) -> None:
    require_root()
    hog = FakePod.make("shop", "checkout-7d9f", "app")
    light = FakePod.make("shop", "frontend-5c4b", "web")
    kubelet = FakeKubelet([hog, light])
    with Sandbox(quota_hierarchy(), name="rqs-prom") as sb:  # v1 here, v2 in tests/vm
        g_hog = sb.group(hog.cgroup_name(), quota_cores=0.5)
        g_light = sb.group(light.cgroup_name("besteffort"))
        # --gzip: Prometheus asks for gzip on every scrape, so its scrapes here are compressed
        agent = AgentProcess("--kubelet-url", kubelet.url, "--cgroup", sb.base, "--gzip")
        try:
            prom = prometheus([agent.addr])
            sb.spawn(g_hog)
            sb.spawn(g_light, code=PERIODIC.format(busy=0.0005, sleep=0.005))
            time.sleep(14)  # > one 10 s window of steady state, plus scrapes
            at = time.time()
            sel_h = f'pod="{hog.name}",namespace="shop",container="app"'
            sel_l = f'pod="{light.name}",namespace="shop",container="web"'
            q = ("histogram_quantile(0.95, rate(runqscale_runqueue_latency_seconds_bucket"
                 "{{{}}}[10s]))")
            prom_hog = prom.value(q.format(sel_h), at)
            gauge_hog = prom.value(f"runqscale_runqueue_latency_p95_seconds{{{sel_h}}}", at)
            prom_light = prom.value(q.format(sel_l), at)
            gauge_light = prom.value(f"runqscale_runqueue_latency_p95_seconds{{{sel_l}}}", at)
            print(f"hog p95: prometheus {prom_hog * 1e3:.3f} ms, gauge {gauge_hog * 1e3:.3f} ms;"
                  f" light p95: prometheus {prom_light * 1e3:.4f} ms, "
                  f"gauge {gauge_light * 1e3:.4f} ms")
            assert gauge_hog > 10e-3, "a 0.5-core hog's throttled waits must show"
            assert abs(_bucket(prom_hog) - _bucket(gauge_hog)) <= 1, (prom_hog, gauge_hog)
            # On a shared machine other workloads starve the neighbour too: say so if it fails.
            bound = light_neighbour_bound(gauge_hog)
            assert prom_light < bound and gauge_light < bound, (
                f"light neighbour p95 {prom_light * 1e3:.3f} / {gauge_light * 1e3:.3f} ms over "
                f"{bound * 1e3:.2f} ms; host "
                f"CPU pressure {_host_cpu_pressure()}, load {os.getloadavg()[0]:.1f} on "
                f"{os.cpu_count()} CPUs")
            # labels: the series of both pods carry node/namespace/pod/container/cgroup
            for pod, g in ((hog, g_hog), (light, g_light)):
                res = prom.query(f'runqscale_runqueue_latency_p95_seconds{{pod="{pod.name}"}}')
                assert len(res) == 1
                m = res[0]["metric"]
                assert m["node"] == "test-node" and m["namespace"] == pod.namespace
                assert m["container"] == pod.container and m["cgroup"] == g.rel
            # throttling is attributed to the hog, not the neighbour
            thr = prom.value(f"rate(runqscale_cpu_throttled_periods_total{{{sel_h}}}[10s])", at)
            usage = prom.value(f"rate(runqscale_cpu_usage_seconds_total{{{sel_h}}}[10s])", at)
            assert thr > 5 and 0.4 < usage < 0.6, (thr, usage)
            assert prom.value('up{job="runqscale-agent"}') == 1
            req = urllib.request.Request(agent.url + "/metrics",
                                         headers={"Accept-Encoding": "gzip"})  # as Prometheus
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                assert b"runqscale_runqueue_latency_seconds_bucket" in gzip.decompress(r.read())
            assert kubelet.requests < 10, "pod list must be polled, not fetched per scrape"
        finally:
            agent.stop()
            kubelet.close()
