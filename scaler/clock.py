"""Wall-clock jumps in the live loops (`scaler --prometheus`, `scaler k8s`).

Policies are pure and take time from the samples (`window.now`); live samples carry wall-clock
timestamps. When the wall clock steps (NTP, a VM resumed, an operator), the policies' windows
would be judged in the wrong time: a forward step of hours empties every stabilisation window
and cool-down at once (a scale-in seconds after a scale-out), and a backward step makes samples
recorded before it look fresh again (Prometheus answers with what it stored at those times).

`WallClockGuard` compares wall time with the monotonic clock at every loop step:

- forward jump J: samples stamped after it are moved J back before a policy sees them, so the
  policy's time keeps following real elapsed time (windows and cool-downs hold);
- backward jump: samples stamped at or before the highest wall time seen so far may be from
  before the jump and are not used: no decision until the wall clock passes that mark (as long as
  the jump; Prometheus itself rejects the new samples as out of order until then).

Time is injected: `observe(wall, mono)` once per step, then `policy_window(...)` per workload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from runqscale.scaler.model import Recommendation, SignalWindow

# Steps smaller than this are scheduling noise, not jumps (NTP slews at most 0.5 ms/s).
TOLERANCE_SECONDS = 2.0
# Forward shifts older than this (in wall time) apply to every sample a window can still hold.
_FOLD_SECONDS = 86400.0


@dataclass
class WallClockGuard:
    tolerance: float = TOLERANCE_SECONDS
    hold_until: float = -math.inf  # samples at or before this may predate a backward jump
    _base_shift: float = 0.0
    _shifts: list[tuple[float, float]] = field(default_factory=list)  # (old-timeline wall, J)
    _last: tuple[float, float] | None = None  # (wall, mono) at the previous step
    _high_water: float = -math.inf

    def observe(self, wall: float, mono: float) -> str | None:
        """Record one loop step; returns a one-line note when the wall clock jumped."""
        last, self._last = self._last, (wall, mono)
        if last is None:
            self._high_water = wall
            return None
        expected = last[0] + (mono - last[1])  # where the wall clock should be now
        jump = wall - expected
        note = None
        if jump > self.tolerance:
            self._shifts.append((expected, jump))
            note = (f"wall clock jumped forward {jump:.0f} s: later samples are taken "
                    f"{jump:.0f} s earlier so windows and cool-downs keep real time")
        elif jump < -self.tolerance:
            self.hold_until = max(self.hold_until, self._high_water, expected)
            note = (f"wall clock jumped back {-jump:.0f} s: samples up to {self.hold_until:.0f} "
                    f"may predate the jump; no decision on them ({self.hold_until - wall:.0f} s)")
        self._high_water = max(self._high_water, wall)
        self._fold(wall)
        return note

    def _fold(self, wall: float) -> None:
        old = [s for s in self._shifts if s[0] < wall - _FOLD_SECONDS]
        self._base_shift += sum(j for _, j in old)
        self._shifts = [s for s in self._shifts if s[0] >= wall - _FOLD_SECONDS]

    def shift(self, ts: float) -> float:
        return self._base_shift + sum(j for o, j in self._shifts if ts > o)

    def policy_window(self, window: SignalWindow) -> SignalWindow | None:
        """The window in the policy's time: samples after the hold mark, forward jumps taken
        out. None when no sample is left (no decision)."""
        keep = window.ts > self.hold_until
        if not keep.any():
            return None
        ts = window.ts[keep]
        shifted = ts - np.fromiter((self.shift(t) for t in ts), dtype=np.float64, count=ts.size)
        # a sample stamped within one step of a jump can land out of order: keep time monotone
        shifted = np.maximum.accumulate(shifted)
        series = {k: v[keep] for k, v in window.series.items()}
        return SignalWindow(window.workload, shifted, series, window.pods)

    def wall_rec(self, rec: Recommendation, wall_now: float) -> Recommendation:
        """A decision made in policy time, stamped with the wall time of its sample again."""
        return replace(rec, ts=wall_now)
