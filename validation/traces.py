"""Traffic traces: parse a file into per-step request rates, pick a segment, scale it to this
machine, time-warp it, and turn it into an open-loop send schedule.

Accepted files (the format is detected from the first data line):

- `timestamp,count` CSV, with or without a header line: the WC98 day-25 per-minute file
  (`1998-05-19 22:00,1569`), the 1998-06-25 per-second file (`period,count` header), or unix
  seconds (`898812001,116`). The step is the trace's own spacing (60 s, 1 s, ...).
- a whitespace-separated list of per-second counts (any number per line).

Every parse error is one `TraceError` line naming `file:line` and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

_TS_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M")


class TraceError(ValueError):
    """A bad trace file: the message names the file and line."""


@dataclass(frozen=True)
class Trace:
    """Requests per step; step `i` starts `i × step_seconds` after the first timestamp."""

    path: str
    counts: np.ndarray  # float64, requests in each step
    step_seconds: float
    start_label: str  # the first timestamp as written in the file (or "0")
    start_unix: float | None  # the first timestamp, when the file has real timestamps

    @property
    def seconds(self) -> float:
        return self.counts.size * self.step_seconds

    @property
    def rates(self) -> np.ndarray:
        """Requests per second in each step."""
        return self.counts / self.step_seconds

    def label(self, offset_s: float) -> str:
        """The trace's own clock at `offset_s` seconds after its start (for reports)."""
        if self.start_unix is None:
            return f"+{offset_s:g}s"
        t = datetime.fromtimestamp(self.start_unix + offset_s)
        return t.strftime("%Y-%m-%d %H:%M:%S")


def _parse_ts(text: str) -> float | None:
    text = text.strip()
    for fmt in _TS_FORMATS:
        try:
            return datetime.strptime(text, fmt).timestamp()
        except ValueError:
            continue
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _count(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise TraceError(f"{where}: count {text.strip()!r} is not a number; "
                         "write a non-negative request count") from None
    if not math.isfinite(v) or v < 0:
        raise TraceError(f"{where}: count {text.strip()!r} must be a finite number >= 0")
    return v


def load_trace(path: str) -> Trace:
    """Parse `path`; raises TraceError (file:line) on the first bad line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise TraceError(f"{path}: no such trace file; pass an existing --trace FILE") from None
    except UnicodeDecodeError as e:
        raise TraceError(f"{path}: not a text file ({e.reason}); pass a CSV or a list of counts"
                         ) from None
    except OSError as e:
        raise TraceError(f"{path}: cannot read ({e.strerror})") from None
    data = [(i, ln) for i, ln in enumerate(lines, start=1)
            if ln.strip() and not ln.lstrip().startswith("#")]
    if not data:
        raise TraceError(f"{path}:1: empty trace; write `timestamp,count` lines or per-second "
                         "counts")
    first_no, first = data[0]
    if "," in first:
        return _load_csv(path, data)
    # whitespace list: every token a count per second
    counts: list[float] = []
    for no, ln in data:
        if "," in ln:
            raise TraceError(f"{path}:{no}: a comma in a whitespace list of counts (line "
                             f"{first_no} had none); use one format per file")
        counts.extend(_count(tok, f"{path}:{no}") for tok in ln.split())
    return Trace(path, np.asarray(counts, dtype=np.float64), 1.0, "+0s", None)


def _load_csv(path: str, data: list[tuple[int, str]]) -> Trace:
    rows = data
    first_no, first = data[0]
    cells = first.split(",")
    if len(cells) == 2 and _parse_ts(cells[0]) is None:
        try:
            float(cells[1])
        except ValueError:
            rows = data[1:]  # a header line: `period,count`
    if not rows:
        raise TraceError(f"{path}:{first_no}: a header and no data; add `timestamp,count` lines")
    ts: list[float] = []
    counts: list[float] = []
    for no, ln in rows:
        cells = ln.split(",")
        where = f"{path}:{no}"
        if len(cells) != 2:
            raise TraceError(f"{where}: expected 2 fields `timestamp,count`, got {len(cells)}")
        t = _parse_ts(cells[0])
        if t is None:
            raise TraceError(f"{where}: timestamp {cells[0].strip()!r} is not "
                             "'YYYY-MM-DD HH:MM[:SS]' or unix seconds")
        if ts and t <= ts[-1]:
            raise TraceError(f"{where}: timestamp {cells[0].strip()!r} does not increase; "
                             "sort the file by time")
        ts.append(t)
        counts.append(_count(cells[1], where))
    if len(ts) == 1:
        step = 1.0
    else:
        diffs = np.diff(np.asarray(ts))
        step = float(np.median(diffs))
        bad = np.nonzero(np.abs(diffs - step) > 1e-6)[0]
        if bad.size:
            no = rows[int(bad[0]) + 1][0]
            raise TraceError(f"{path}:{no}: gap of {diffs[bad[0]]:g} s where the trace's step is "
                             f"{step:g} s; fill the missing steps (count 0) or resample")
    if not math.isfinite(step * len(ts)) or not step * len(ts) > 0:
        raise TraceError(f"{path}:{rows[-1][0]}: timestamps span more (or less) time than can be "
                         f"replayed (step {step:g} s); write unix seconds or dates")
    return Trace(path, np.asarray(counts, dtype=np.float64), step,
                 rows[0][1].split(",")[0].strip(), ts[0])


@dataclass(frozen=True)
class Segment:
    """The part of a trace replayed, and how it maps onto real time and this machine."""

    start_s: float  # offset in the trace
    trace_seconds: float  # length in trace time
    time_warp: float  # trace seconds per real second
    scale: float  # real requests/s per trace request/s
    peak_trace_rps: float  # the trace rate mapped onto `peak_rps`
    peak_rps: float

    @property
    def real_seconds(self) -> float:
        return self.trace_seconds / self.time_warp


def choose_segment(trace: Trace, duration_s: float, peak_rps: float,
                   start_s: float = 0.0, length_s: float | None = None,
                   time_warp: float | None = None, peak_quantile: float = 0.99) -> Segment:
    """Pick `[start, start+length)` of the trace to play in `duration_s` real seconds.

    Without a length the segment runs to the trace's end (or duration × warp when a warp is
    given). The scale maps the segment's `peak_quantile` step rate (robust to one-minute spikes,
    which are replayed as they are, above the peak) onto `peak_rps`.
    """
    if not 0 <= start_s < trace.seconds:
        raise ValueError(f"segment start {start_s:g} s is outside the trace (0 to "
                         f"{trace.seconds:g} s)")
    if length_s is None:
        length_s = (trace.seconds - start_s) if time_warp is None else duration_s * time_warp
    length_s = min(length_s, trace.seconds - start_s)
    if length_s <= 0:
        raise ValueError("empty segment")
    warp = length_s / duration_s if time_warp is None else time_warp
    if time_warp is not None:
        length_s = min(length_s, duration_s * time_warp)
    i0 = int(start_s // trace.step_seconds)
    i1 = max(i0 + 1, int(math.ceil((start_s + length_s) / trace.step_seconds)))
    rates = trace.rates[i0:i1]
    peak = float(np.quantile(rates, peak_quantile)) if rates.size else 0.0
    if peak <= 0:
        raise ValueError("the segment has no requests; choose another --segment")
    return Segment(start_s, length_s, warp, peak_rps / peak, peak, peak_rps)


def real_rates(trace: Trace, seg: Segment, step_s: float = 1.0) -> np.ndarray:
    """Requests per second to send in each real `step_s` interval of the replay: the trace's
    mean rate over the trace time that interval covers (a per-second trace warped 60× is
    averaged over its minute, not sampled at one second of it), times the scale."""
    n = int(math.ceil(seg.real_seconds / step_s - 1e-9))
    span = step_s * seg.time_warp
    csum = np.concatenate(([0.0], np.cumsum(trace.counts)))

    def counts_before(t: np.ndarray) -> np.ndarray:  # requests in the trace before time t
        x = np.clip(t / trace.step_seconds, 0, trace.counts.size)
        i = np.minimum(x.astype(int), trace.counts.size - 1)
        return csum[i] + (x - i) * trace.counts[i]

    a = seg.start_s + np.arange(n) * span
    b = np.minimum(a + span, trace.seconds)
    mean = (counts_before(b) - counts_before(a)) / np.maximum(b - a, 1e-9)
    return mean * seg.scale


def busiest_start(trace: Trace, length_s: float) -> float:
    """The start of the `length_s` window with the most requests (on the trace's steps)."""
    k = max(1, min(trace.counts.size, int(math.ceil(length_s / trace.step_seconds - 1e-9))))
    csum = np.concatenate(([0.0], np.cumsum(trace.counts)))
    sums = csum[k:] - csum[:-k]
    return float(int(np.argmax(sums)) * trace.step_seconds)


def window_segment(trace: Trace, duration_s: float, start_s: float | None = None,
                   length_s: float | None = None, time_warp: float | None = None,
                   max_warp: float = 60.0) -> Segment:
    """The segment replayed in `duration_s` real seconds, unscaled (scale 1). Without a length
    it is what the run covers at `time_warp`, or at most `max_warp` (the whole trace if
    shorter); without a start it is the busiest window of that length. A warp above `max_warp`
    is refused: a day squeezed into minutes tests start states, not controllers."""
    if start_s is not None and not 0 <= start_s < trace.seconds:
        raise ValueError(f"segment start {start_s:g} s is outside the trace (0 to "
                         f"{trace.seconds:g} s)")
    if length_s is None:
        length_s = duration_s * (time_warp or max_warp)
    room = trace.seconds - (start_s or 0.0)
    length_s = min(length_s, room)
    if length_s <= 0:
        raise ValueError("empty segment")
    if start_s is None:
        start_s = min(busiest_start(trace, length_s), trace.seconds - length_s)
    warp = time_warp or length_s / duration_s
    if warp > max_warp * (1 + 1e-9):
        raise ValueError(f"{length_s:g} trace seconds in {duration_s:g} s is a {warp:.0f}x "
                         f"time warp, above the maximum {max_warp:g}x: shorten the segment "
                         "(START,DURATION) or lengthen --duration")
    length_s = min(length_s, duration_s * warp)
    i0 = int(start_s // trace.step_seconds)
    i1 = max(i0 + 1, int(math.ceil((start_s + length_s) / trace.step_seconds)))
    rates = trace.rates[i0:i1]
    peak = float(np.quantile(rates, 0.99)) if rates.size else 0.0
    if peak <= 0:
        raise ValueError("the segment has no requests; choose another --segment")
    return Segment(start_s, length_s, warp, 1.0, peak, peak)


def schedule(rates: np.ndarray, step_s: float = 1.0, seed: int = 0) -> np.ndarray:
    """Send times (seconds from the start): a Poisson process with the given piecewise rate.

    Deterministic for a seed, so every policy in one repeat replays the same requests.
    """
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for i, r in enumerate(rates):
        n = rng.poisson(max(0.0, float(r)) * step_s)
        if n:
            out.append(np.sort(rng.uniform(i * step_s, (i + 1) * step_s, n)))
    return np.concatenate(out) if out else np.zeros(0)
