"""`runqscale validate stress`: the short signal check, with real processes in real cgroups.

A light periodic service runs alone, then a CPU hog starts beside it in its own quota-limited
cgroup (what the SHOWAR reproduction did by hand with `stress` and `runqlat 5 1`). Every
interval we print both containers' run-queue p95 and the hog's throttled share, then a verdict:
the hog's p95 must rise past the threshold within seconds while the light one stays low.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from runqscale.agent.sampler import Sampler
from runqscale.probes.backends import Probe
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.model import Hierarchy
from runqscale.validation.sandbox import PERIODIC, Sandbox

LIGHT_SERVICE = PERIODIC.format(busy=0.0003, sleep=0.01)  # ~3 % of a core, wakes 100 times/s


@dataclass(frozen=True)
class StressConfig:
    quota_cores: float = 0.5
    baseline_s: float = 3.0
    hog_s: float = 10.0
    interval_s: float = 0.5
    hog_threshold_s: float = 0.010  # the hog's p95 must pass this ...
    detect_within_s: float = 2.0  # ... within this long after it starts
    light_limit_s: float = 0.001  # the light service's p95 must stay below this


@dataclass
class StressRow:
    t: float  # seconds since the hog started (negative: baseline)
    light_p95: float | None
    hog_p95: float | None
    hog_throttled: float | None


@dataclass
class StressResult:
    config: StressConfig
    backend: str
    hierarchy: str
    rows: list[StressRow] = field(default_factory=list)
    detection_s: float | None = None
    light_p95_max: float | None = None
    passed: bool = False
    verdict: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def run_stress(probe: Probe, mounts: CgroupMounts, cfg: StressConfig,
               on_row: Callable[[StressRow], None] | None = None) -> StressResult:
    hier: Hierarchy = probe.hierarchy
    quota = cfg.quota_cores if hier is Hierarchy.V1_CPU or _v2_has_cpu(mounts) else None
    res = StressResult(cfg, probe.backend, hier.value)
    with Sandbox(hier, name="runqscale-stress", mounts=mounts) as sb:
        light = sb.group("light-service")
        hog = sb.group("cpu-hog", quota_cores=quota)
        sb.spawn(light, code=LIGHT_SERVICE)
        sampler = Sampler(probe, mounts, sb.root, only=[light.rel, hog.rel])
        time.sleep(0.3)
        sampler.sample()
        start = time.monotonic()
        hog_started: float | None = None
        while True:
            time.sleep(cfg.interval_s)
            if hog_started is None and time.monotonic() - start >= cfg.baseline_s:
                sb.spawn(hog)
                hog_started = time.monotonic()
            iv = sampler.sample()
            # A row is stamped when its interval ends: the one that saw the hog start is after
            # it (a slow spawn, e.g. on an emulated CPU, must not date the hog's first waits
            # into the baseline).
            now = time.monotonic()
            by = {s.path: s for s in iv.cgroups}
            lt, hg = by.get(light.rel), by.get(hog.rel)
            t = now - hog_started if hog_started else now - start - cfg.baseline_s
            row = StressRow(round(t, 2), lt.quantile(0.95) if lt else None,
                            hg.quantile(0.95) if hg else None, hg.throttled_ratio if hg else None)
            res.rows.append(row)
            if on_row:
                on_row(row)
            if hog_started is not None and res.detection_s is None and row.hog_p95 is not None \
                    and row.hog_p95 >= cfg.hog_threshold_s:
                res.detection_s = time.monotonic() - hog_started
            if hog_started is not None and now - hog_started >= cfg.hog_s:
                break
    return _judge(res, quota)


def _judge(res: StressResult, quota: float | None) -> StressResult:
    cfg = res.config
    during = [r for r in res.rows if r.t > 0]
    lights = [r.light_p95 for r in during if r.light_p95 is not None]
    res.light_p95_max = max(lights) if lights else None
    # The light service's p95 over the whole hog phase (max of interval p95s is too strict:
    # one interval with 3 wakeups is noise), so take the median of its interval p95s.
    light_typ = sorted(lights)[len(lights) // 2] if lights else None
    hog_ok = res.detection_s is not None and res.detection_s <= cfg.detect_within_s
    light_ok = light_typ is not None and light_typ < cfg.light_limit_s
    res.passed = hog_ok and light_ok
    det = f"{res.detection_s:.2f} s" if res.detection_s is not None else "never"
    lt = f"{light_typ * 1e3:.3f} ms" if light_typ is not None else "no data"
    limited = f"{quota:g}-CPU quota" if quota else "no quota (cgroup2 without cpu controller)"
    res.verdict = (
        f"{'PASS' if res.passed else 'FAIL'}: hog ({limited}) p95 passed "
        f"{cfg.hog_threshold_s * 1e3:g} ms after {det} (limit {cfg.detect_within_s:g} s); "
        f"light service median p95 {lt} (limit {cfg.light_limit_s * 1e3:g} ms)"
    )
    return res


def _v2_has_cpu(mounts: CgroupMounts) -> bool:
    try:
        with open(f"{mounts.v2}/cgroup.subtree_control") as f:
            return "cpu" in f.read().split()
    except OSError:
        return False


def plot(res: StressResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r.t for r in res.rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, label in (("light_p95", "light service p95"), ("hog_p95", "quota-limited hog p95")):
        ax.plot(t, [(getattr(r, key) or float("nan")) * 1e3 for r in res.rows], marker=".",
                label=label)
    ax.axhline(res.config.hog_threshold_s * 1e3, ls="--", c="grey", lw=0.8)
    ax.axvline(0, c="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the hog started")
    ax.set_ylabel("run-queue latency p95 (ms)")
    ax.set_title(f"runqscale validate stress ({res.backend}, cgroup {res.hierarchy})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
