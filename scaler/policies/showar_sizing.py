"""showar v2's estimators, each small, pure and table-tested (like the VPA recommender's
`logic/`, composed as with_margin(floor(demand(...)))).

What the measurements of v1 showed, and what each estimator does about it:

- v1 sized on mean + 3σ of *usage*, which the quota caps: it under-reads exactly when the
  container is throttled. `demand` reads usage only while unthrottled; while throttled it is
  CPU per request (learned while unthrottled) × the request rate, and never below usage.
- v1 charged limit = 2 × (μ + 3σ) with a 0.128-core floor: most of its allocation was margin,
  and v2's four stacked margins (mean + 1σ, × 1.3, the largest size of 60 s, a 0.8
  down-hysteresis) still held 2× what the replicas used. `with_margin` adds one: k σ of
  one-second usage over the mean demand, σ being the larger of the σ seen while unthrottled
  and the Poisson burst of the request rate (CPU per request × √(requests per second per
  replica)), which throttled usage cannot show. `floor` comes from per-request CPU: a replica
  must finish one request's CPU within one CFS period (100 ms) or every request is throttled
  at least once. For requests short against a period (where a throttled period is a tail,
  `tail_matters`), the margin is at least z σ of one *period's* Poisson burst (√10 times the
  one-second one; z for `max_throttled_share` of periods above): DeathStarBench's services
  were sized on the one-second burst, throttled at once, and the learned CFS-tail factor
  jumped to x1.9 at the first decision and held there (stop 24: limits 2.5x usage). What
  throttling still shows beyond that is a burstier period than a Poisson count
  (`next_tail_factor`): it widens the margin, never the mean (stop 25's factor on the whole
  size kept DSB's services at 2.6-3.3x usage, throttled in under 0.5 % of periods).
- v1's p95 over events is diluted by short wakeups (a service throttled in 100 % of periods
  showed p95 1.1 ms). `wait_per_request` splits the time-weighted wait (the histogram's sum, per
  second) into throttled wait (CFS throttled time: the container's own limit, fixed by a resize)
  and contention wait (the rest: neighbours, fixed by scaling out or spreading), per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from runqscale.scaler.model import ScalerConfig, SignalWindow

CFS_PERIOD_SECONDS = 0.1  # the kernel's default cpu.cfs_period_us / cpu.max period

# the reductions themselves: ndarray.sum/.any/.max/.all go through Python wrappers that cost
# more than the arithmetic on a window of a few dozen samples (same results, same order)
_sum, _any = np.add.reduce, np.logical_or.reduce
_finite = math.isfinite


def _lsum(values: list[float]) -> float:
    """Σ values to the bit as numpy adds them (np.add.reduce: in order below eight values,
    pairwise from eight on). The estimators that read only the last seconds of a window (3-16
    samples) loop over Python lists: numpy's per-call cost was most of a decision's (stop 49)."""
    if len(values) < 8:
        total = 0.0
        for v in values:
            total += v
        return total
    return float(_sum(np.array(values)))


def _series_from(window: SignalWindow, name: str, start: int) -> list[float] | None:
    """The series `name` from sample `start` on, as a list; None if the window lacks it."""
    arr = window.series.get(name)
    return None if arr is None else arr[start:].tolist()


def _per_replica_finite(totals: list[float], divisor: list[float]) -> list[float]:
    """The finite per-replica values of a total over replicas (the divisor is NaN or > 0:
    SignalWindow.replicas_divisor)."""
    out = []
    for t, d in zip(totals, divisor, strict=True):
        v = t / d
        if _finite(v):
            out.append(v)
    return out


def _last_finite_max(values: list[float] | None, last: int = 3) -> float | None:
    """The highest of the last `last` finite values (of equal ones the later, as
    np.maximum.reduce picks: it tells -0.0 from 0.0); None without any."""
    seen = [] if values is None else [v for v in values if _finite(v)]
    if not seen:
        return None
    top = seen[-last:]
    best = top[0]
    for v in top[1:]:
        if not best > v:
            best = v
    return best


@dataclass(frozen=True)
class SizingParams:
    demand_window_seconds: float = 15.0  # recent usage the demand is read from
    # the request rate behind per-request demand: the mean since the last decision (one
    # period), not the last second alone — one second is one Poisson draw, and max(draw, usage)
    # kept the draws above the mean (per-request demand read 1.22x usage, median of stop 24's
    # DeathStarBench resizes)
    rate_window_seconds: float = 3.0
    sigma_k: float = 2.0  # limit = demand + kσ of one-second usage (the one margin)
    throttled_threshold: float = 0.1  # throttled share of CFS periods that marks a throttled window
    cpu_per_request_smoothing: float = 0.2  # EWMA weight of each unthrottled sample
    headroom: float = 0.0  # an optional relative margin on top (users' knob; not tuned)
    throttle_growth: float = 1.5  # limit growth while throttled with no per-request CPU known
    # usage at this share of the limit or more, throttled, while CPU per request is only a lower
    # bound: saturated (`saturated`), and the limit grows by `throttle_growth` at once (v2.5)
    pinned_share: float = 0.9
    min_cores: float = 0.02  # absolute floor (20 millicores)
    floor_requests: float = 1.0  # floor: this many requests' CPU within one CFS period
    # the CFS tail: a request that meets a throttled period waits up to the period's end, so
    # a p99 needs throttled periods rarer than ~1 % (chosen by that reasoning, not swept)
    max_throttled_share: float = 0.01
    # the learned tail factor (`next_tail_factor`): once throttled periods are rare (a quarter
    # of the maximum) its excess over 1 halves in this long: bursts are a trait of the
    # service, and a per-decision decay (3 % every 3-4 s) gave DSB's learned margin back
    # within a minute and throttled them again
    tail_half_life_seconds: float = 600.0
    tail_max: float = 4.0  # the learned factor on the margin (not on the whole size)
    # ... and it grows only where a throttled period costs a request far more than its own CPU:
    # where the stall a throttled replica stands per period exceeds max(target, tail_stretch x
    # CPU per request). Measured in stop 22's logs: DeathStarBench's services stood 7-56 ms
    # per throttled period for 0.07-0.25 ms requests (40-800x), runlang 7-150 ms for 11 ms
    # requests (1-14x): throttling meters a CPU-heavy request out, it does not add a tail. 20
    # lies between the two (chosen on those two workloads, not swept).
    tail_stretch: float = 20.0


@dataclass(frozen=True)
class Demand:
    """Per-replica CPU demand (cores) and how it was read."""

    cores: float  # mean
    usage: float  # per-replica usage, the lower bound of demand
    sigma: float  # σ of one-second per-replica usage (seen, or the requests' Poisson burst)
    throttled: bool
    source: str  # usage | per-request | limit-growth | saturated (`saturated`)
    period_sigma: float = 0.0  # σ of one CFS period's CPU (cores) from the requests' Poisson count


def recent_throttled_ratio(window: SignalWindow) -> float | None:
    """The highest throttled share of CFS periods over the last three samples that carry one
    (None without any): what `is_throttled` reads."""
    return _last_finite_max(_series_from(window, "throttled_ratio", 0))


def throttled_at(ratio: float | None, p: SizingParams) -> bool:
    """Whether a throttled ratio (recent_throttled_ratio's) counts as throttled."""
    return ratio is not None and ratio >= p.throttled_threshold


def is_throttled(window: SignalWindow, p: SizingParams) -> bool:
    return throttled_at(recent_throttled_ratio(window), p)


def learn_cpu_per_request(window: SignalWindow, since: float | None, prev: float | None,
                          p: SizingParams) -> tuple[float | None, bool]:
    """CPU seconds per request and whether it was read from unthrottled samples.

    Σ usage / Σ request rate over the window's samples that were not throttled (throttled usage
    is capped by the quota and would under-read), blended into the previous (unthrottled)
    estimate with weight `cpu_per_request_smoothing` per new sample. A ratio of sums, not a mean
    of ratios: one second's usage lags its requests, a window's does not.

    With no unthrottled sample yet (a container throttled from its start, as one sized at the
    edge of its load is), the ratio over every sample is a lower bound, returned as not exact:
    without it the first resize could only grow the limit blindly, and v2's blind growth
    (0.4 -> 0.8 cores at the first decision) cost more than all its later decisions saved."""
    usage, rate = window.get("cpu_usage_cores"), window.get("request_rate")
    thr = window.get("throttled_ratio")
    # no errstate (it costs more than the masks): comparisons with NaN do not warn in numpy 2;
    # an older numpy may print one RuntimeWarning per line, nothing worse
    seen = np.isfinite(usage) & np.isfinite(rate) & (rate > 0) & (usage > 0)
    ok = seen & ~(np.isfinite(thr) & (thr >= p.throttled_threshold))
    if prev is None and not _any(ok):
        if not _any(seen):
            return None, False
        return float(_sum(usage[seen]) / _sum(rate[seen])), False
    new = int(_sum(ok & (window.ts > since))) if since is not None and prev is not None \
        else int(_sum(ok))
    if new == 0:
        return prev, prev is not None
    c = float(_sum(usage[ok]) / _sum(rate[ok]))
    if prev is None:
        return c, True
    keep = (1.0 - p.cpu_per_request_smoothing) ** new
    return keep * prev + (1.0 - keep) * c, True


def saturated(window: SignalWindow, limit: float | None, p: SizingParams) -> bool:
    """The last sample that carries requests shows per-replica usage pinned at the limit
    (`pinned_share` of it or more) and throttling, and so does every loaded sample of the last
    three show throttling: the demand is above the limit by an amount usage cannot show. (A
    lower bound on CPU per request read from such samples times their request rate gives the
    capped usage back: stop 29's runlang openings sized 0.4 -> 0.49-0.61 cores on it while
    demand was 0.5-0.6 plus a growing backlog.) Only the last must be pinned: the first tick
    of a load covers part of a second, and its usage reads low (stop 30: 0.31 of 0.4)."""
    if not limit:
        return False
    start = max(window.ts.size - 3, 0)
    usage = _series_from(window, "cpu_usage_cores", start)
    thr = _series_from(window, "throttled_ratio", start)
    rate = _series_from(window, "request_rate", start)
    if usage is None or thr is None or rate is None:
        return False
    divisor = window.replicas_divisor[start:].tolist()
    pinned: bool | None = None  # the last loaded sample's
    all_throttled = True
    for u, d, t, r in zip(usage, divisor, thr, rate, strict=True):
        per = u / d  # the divisor is NaN or > 0
        if _finite(per) and _finite(t) and _finite(r) and r > 0:  # a loaded sample
            pinned = per >= p.pinned_share * limit
            all_throttled = all_throttled and t >= p.throttled_threshold
    return bool(pinned) and all_throttled


def saturated_growth(window: SignalWindow, limit: float, p: SizingParams) -> float:
    """The limit grown in proportion to the share of periods throttled (x `throttle_growth`
    with every period throttled)."""
    return _grown(_series_from(window, "throttled_ratio", max(window.ts.size - 3, 0)), limit, p)


def _grown(last_ratios: list[float] | None, limit: float, p: SizingParams) -> float:
    """saturated_growth on the last three samples' throttled ratios: their highest but NaN (a
    +inf counts, as np.nanmax read it before stop 49), a share of 1 without any finite one."""
    ratios = [] if last_ratios is None else [r for r in last_ratios if r == r]  # NaN != NaN
    share = max(ratios) if any(_finite(r) for r in ratios) else 1.0
    return limit * (1.0 + (p.throttle_growth - 1.0) * min(1.0, share))


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and (population) σ of a non-empty list, to the bit as numpy's sums give them."""
    mean = _lsum(values) / len(values)
    squares = []
    for v in values:
        dev = v - mean
        squares.append(dev * dev)
    return mean, math.sqrt(_lsum(squares) / len(values))


def demand(window: SignalWindow, limit: float | None, cpu_per_request: float | None,
           p: SizingParams) -> Demand | None:
    """Per-replica demand over the last `demand_window_seconds`; None without usage samples."""
    start = window.index_since(window.now - p.demand_window_seconds)
    usage_all = _series_from(window, "cpu_usage_cores", start)
    if usage_all is None:
        return None
    divisor = window.replicas_divisor[start:].tolist()
    per = _per_replica_finite(usage_all, divisor)
    if not per:
        return None
    usage, seen_sigma = _mean_std(per)
    # the request rate's shorter window, within the demand's
    rate_start = max(start, window.index_since(window.now - p.rate_window_seconds))
    rates = _series_from(window, "request_rate", rate_start)
    recent = [] if rates is None else \
        _per_replica_finite(rates, divisor[rate_start - start:])
    per_req = burst = None
    period = 0.0
    if cpu_per_request is not None and recent:
        reps = max(_lsum(recent) / len(recent), 0.0)
        per_req = cpu_per_request * reps
        burst = cpu_per_request * math.sqrt(reps)
        period = cpu_per_request * math.sqrt(reps / CFS_PERIOD_SECONDS)
    ratios = _series_from(window, "throttled_ratio", start)
    throttled = throttled_at(_last_finite_max(ratios), p)
    # throttled usage is capped by the quota: its σ under-reads as its mean does
    sigma = max(0.0 if throttled else seen_sigma, burst or 0.0)
    if not throttled:
        if per_req is not None and per_req > usage:  # load rising faster than usage shows
            return Demand(per_req, usage, sigma, False, "per-request", period)
        return Demand(usage, usage, sigma, False, "usage", period)
    if per_req is not None:
        return Demand(max(per_req, usage), usage, sigma, True, "per-request", period)
    # throttled in a share of periods: grow in proportion (bursts within a period throttle a
    # replica whose mean usage is well under its limit; every period throttled: x growth)
    grown = _grown(None if ratios is None else ratios[-3:], limit or usage, p)
    return Demand(max(grown, usage), usage, 0.0, True, "limit-growth")


def floor(cpu_per_request: float | None, config: ScalerConfig, p: SizingParams) -> float:
    """The smallest limit: the user's minimum if set, else one CFS period must carry
    `floor_requests` requests' CPU (at least `min_cores`)."""
    if config.min_cpu_per_replica is not None:
        return config.min_cpu_per_replica
    per_req = 0.0 if cpu_per_request is None else \
        cpu_per_request * p.floor_requests / CFS_PERIOD_SECONDS
    return max(p.min_cores, per_req)


def throttled_share(window: SignalWindow) -> float | None:
    """Mean share of CFS periods throttled over the window's samples; None without any."""
    ratios = _series_from(window, "throttled_ratio", 0)
    seen = [] if ratios is None else [r for r in ratios if _finite(r)]
    return _lsum(seen) / len(seen) if seen else None


def throttle_stall(window: SignalWindow) -> float | None:
    """Mean seconds a replica stood throttled per throttled CFS period over the window: its
    throttled time over its throttled periods (share x 10 periods/s: only periods in which the
    replica ran count, so this reads low for one idle part of the time). None without both."""
    ratios = _series_from(window, "throttled_ratio", 0)
    seconds = _series_from(window, "throttled_seconds_per_second", 0)
    if ratios is None or seconds is None:
        return None
    shares, stood = [], []
    for r, s, d in zip(ratios, seconds, window.replicas_divisor.tolist(), strict=True):
        per = s / d  # the divisor is NaN or > 0
        if _finite(r) and _finite(per) and r > 0:
            shares.append(r)
            stood.append(per)
    periods = _lsum(shares) / CFS_PERIOD_SECONDS
    return _lsum(stood) / periods if periods > 0 else None


def tail_matters(stall: float | None, cpu_per_request: float | None, target: float,
                 p: SizingParams) -> bool:
    """A throttled period stalls a request far longer than it may wait: past the target and
    `tail_stretch` x its own CPU time. An unknown stall counts as a whole period."""
    tolerance = max(target, p.tail_stretch * (cpu_per_request or 0.0))
    return (CFS_PERIOD_SECONDS if stall is None else stall) > tolerance


def next_tail_factor(factor: float, share: float | None, limit: float | None, mean: float,
                     margin: float, p: SizingParams, matters: bool = True,
                     elapsed: float = 0.0) -> float:
    """The factor on the margin that one-second and Poisson σ miss, learned from throttling:
    requests come in bursts (fan-out, uneven CPU per request) that make a CFS period's CPU
    spread wider than a Poisson count of requests (DeathStarBench's services sat at demand +
    2σ while throttled in 14-30 % of their periods, and their p99 was 15-85x hpa's).

    A limit throttled in a share s of periods sits z(s) standard deviations of period demand
    above the mean demand (z the normal quantile), so the spread it shows is
    (limit - mean) / z(s), and the margin that leaves `max_throttled_share` above is that
    spread x z(max share). The factor becomes that margin over the modelled one (`margin`,
    before the factor), never less than it was. It grows only where the limit already is the
    size wanted or more (an under-sized limit is resized to that size first) and the stall
    matters (`tail_matters`). Once throttled periods are rare (a quarter of the maximum) its
    excess over 1 halves with `tail_half_life_seconds` over the `elapsed` seconds since the
    last decision. (stop 25 multiplied the whole size by x1.25 per decade of share: x1.5-1.9
    in one step, which then also scaled the mean as load rose; the services ended at 2.6-3.3x
    their usage, throttled in under 0.5 % of periods.)"""
    if share is None or not limit:
        return factor
    wanted = mean + margin * factor
    if share > p.max_throttled_share and limit >= wanted / 1.05 and matters:
        if limit <= mean or margin <= 0:
            return factor  # at or under the mean: the resize to demand comes first
        # a share near a half puts the limit near the mean, where the spread is unreadable:
        # shares above 40 % read as 40 % (z 0.25: a x9 step at most, bounded by tail_max)
        z_seen = NormalDist().inv_cdf(1.0 - min(share, 0.4))
        spread = (limit - mean) / z_seen
        return min(p.tail_max, max(factor, spread * period_z(p) / margin))
    if share < p.max_throttled_share / 4:
        return 1.0 + (factor - 1.0) * 0.5 ** (elapsed / p.tail_half_life_seconds)
    return factor


def period_z(p: SizingParams) -> float:
    """Standard scores above the mean that leave `max_throttled_share` of CFS periods above
    (2.33 at 1 %)."""
    return NormalDist().inv_cdf(1.0 - p.max_throttled_share)


def margin(d: Demand, p: SizingParams, tail: bool = False) -> float:
    """kσ of one-second usage; where a throttled period is a tail (`tail_matters`), at least
    enough that a CFS period's Poisson burst of requests exceeds the limit in no more than
    `max_throttled_share` of periods: z σ_period, σ_period = CPU per request x sqrt(rate /
    period) (√10 times the one-second burst)."""
    m = p.sigma_k * d.sigma
    if tail:
        m = max(m, period_z(p) * d.period_sigma)
    return m


def with_margin(d: Demand, p: SizingParams, tail: bool = False, burst: float = 1.0) -> float:
    """Demand + the margin x `burst` (the learned `next_tail_factor`), plus the optional
    headroom."""
    return (d.cores + margin(d, p, tail) * burst) * (1.0 + p.headroom)


@dataclass(frozen=True)
class Waits:
    """Run-queue wait per request (seconds), split by cause; None where unknown."""

    total: float | None
    throttled: float | None
    contention: float | None


def wait_per_request(window: SignalWindow, seconds: float) -> Waits:
    """Mean over the last `seconds` of wait / request rate: all of it, the throttled part (CFS
    throttled time) and the rest (contention: waiting while runnable and not throttled)."""
    start = window.index_since(window.now - seconds)
    wait = _series_from(window, "runq_wait_seconds_per_second", start)
    rate = _series_from(window, "request_rate", start)
    if wait is None or rate is None:
        return Waits(None, None, None)
    thr = _series_from(window, "throttled_seconds_per_second", start)
    if thr is None:
        thr = [math.nan] * len(wait)
    waits, rates = [], []  # the samples with a wait and requests
    t_waits, t_rates, t_parts = [], [], []  # ... that also carry throttled time
    for w, r, t in zip(wait, rate, thr, strict=True):
        if _finite(w) and _finite(r) and r > 0:
            waits.append(w)
            rates.append(r)
            if _finite(t):
                t_waits.append(w)
                t_rates.append(r)
                t_parts.append(t if t < w else w)  # np.minimum(t, w) as its array loop picks
    if not waits:
        return Waits(None, None, None)
    total = _lsum(waits) / _lsum(rates)
    if not t_waits:
        return Waits(total, None, None)
    rate_t = _lsum(t_rates)
    throttled = _lsum(t_parts) / rate_t
    contention = max(0.0, _lsum(t_waits) / rate_t - throttled)
    return Waits(total, throttled, contention)


def throttle_factor(throttled_wait: float | None, target: float, gain: float = 0.5,
                    most: float = 2.0) -> float:
    """How much to grow the limit for a throttled wait per request above the target:
    1 + gain × ln(wait / target), at most `most` (1 when at or below the target)."""
    if throttled_wait is None or throttled_wait <= target:
        return 1.0
    return min(most, 1.0 + gain * math.log(throttled_wait / target))
