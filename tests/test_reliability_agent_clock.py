"""Wall-clock jumps and the agent's windows (issue 10).

The agent's window and expiry logic runs on the monotonic clock (the probe stamps each reading
with time.monotonic(); Agent, its cumulative window, the cgroup watcher and the pod sources compare
monotonic times only). Shown two ways:

- by structure: no module the agent runs reads the wall clock, except the `ts` field `runqscale
  probe --json` prints (a timestamp for humans, never compared);
- by injection: a real probe on the real kernel, real cgroups with real processes, and an Agent
  stepping while `time.time` jumps by a day forward, two days back, ten years forward and back at
  every step. The live container's series never expire; the removed one's leave one window after
  the removal, no sooner and no later.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
from conftest import require_root

REPO = Path(__file__).resolve().parent.parent
WALL_CLOCK_CALLS = {("time", "time"), ("time", "time_ns"), ("time", "localtime"),
                    ("time", "gmtime"), ("datetime", "now"), ("datetime", "utcnow"),
                    ("datetime", "today"), ("date", "today")}
ALLOWED = {"agent/probe_cmd.py"}  # prints a wall-clock `ts` in its JSON lines; never compares it
SCANNED = ("agent", "exporter", "probes")


def _wall_clock_uses(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name) and \
                (node.func.value.id, node.func.attr) in WALL_CLOCK_CALLS:
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            for alias in node.names:
                if (node.module, alias.name) in WALL_CLOCK_CALLS or alias.name == "datetime":
                    lines.append(node.lineno)
    return lines


def test_agent_code_reads_no_wall_clock() -> None:
    found = {}
    for d in SCANNED:
        for path in sorted((REPO / d).glob("*.py")):
            rel = str(path.relative_to(REPO))
            if rel in ALLOWED or path.name == "bench.py":  # benchmarks time themselves
                continue
            if lines := _wall_clock_uses(path):
                found[rel] = lines
    assert not found, f"wall-clock reads in the agent's code (use time.monotonic): {found}"


def test_the_scan_finds_a_wall_clock_read(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("import time\nfrom datetime import datetime\nt = time.time()\n")
    assert _wall_clock_uses(p) == [2, 3]


@pytest.mark.kernel
def test_wall_clock_jumps_neither_expire_live_nor_keep_dead_series(monkeypatch) -> None:
    require_root()
    from runqscale.agent.cgroupwatch import WatchedCgroupIndex
    from runqscale.agent.daemon import Agent
    from runqscale.agent.pods import PodSource
    from runqscale.agent.sampler import Sampler
    from runqscale.probes.backends import open_probe
    from runqscale.probes.model import Hierarchy
    from runqscale.validation.sandbox import PERIODIC, Sandbox

    real = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + offset[0])
    jumps = [86400.0, -2 * 86400.0, 3.15e8, -3.15e8, 7200.0, -7200.0]
    interval, window = 0.25, 2.0
    probe, mounts, root = open_probe("core", "v1", max_cgroups=4096, bpf_stats=False)
    try:
        with Sandbox(Hierarchy.V1_CPU, name="rqs-clock") as sb:
            live, dead = sb.group("live"), sb.group("dead")
            for g in (live, dead):
                sb.spawn(g, code=PERIODIC.format(busy=0.0005, sleep=0.002))
            index = WatchedCgroupIndex(root, retain=window)
            sampler = Sampler(probe, mounts, root, only=[sb.base], read_cpu=False, index=index)
            agent = Agent(sampler, PodSource(), interval, window)
            paths = {sb.base + "/live": "live", sb.base + "/dead": "dead"}
            step = 0

            def tick() -> dict[str, int]:
                """One interval with a wall-clock jump before it; name -> window count."""
                nonlocal step
                offset[0] += jumps[step % len(jumps)]
                step += 1
                time.sleep(interval)
                assert agent.step()
                assert agent.healthy()
                snap = agent.snapshot()
                counts = snap.window().sum(axis=1).tolist()
                return {paths[c.path]: n for c, n in zip(snap.containers, counts, strict=True)
                        if c.path in paths}

            for _ in range(3 * int(window / interval)):  # three windows, both alive
                seen = tick()
                assert set(seen) >= {"live", "dead"}, seen
            assert seen["live"] > 0 and seen["dead"] > 0
            removed_at = time.monotonic()
            sb.remove(dead)
            gone_after = None
            for _ in range(3 * int(window / interval)):
                seen = tick()
                assert seen.get("live", 0) > 0, f"the live container expired at step {step}"
                if gone_after is None and "dead" not in seen:
                    gone_after = time.monotonic() - removed_at
            index.close()
    finally:
        probe.close()
    print(f"\nclock jumps: {step} intervals, wall clock moved by {jumps} in turn; live series "
          f"kept throughout; removed series gone {gone_after:.2f} s after removal "
          f"(window {window:g} s)")
    assert gone_after is not None, "the removed container's series never left"
    assert window - 2 * interval <= gone_after <= window + 3 * interval
