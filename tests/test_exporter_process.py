"""The agent's own process_* metrics without client_python: the same names, types and meanings
as client_python's ProcessCollector (the metric contract and the dashboard read them), and an
agent that never imports that package (2.1 MB of its 40 MB budget)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry
from prometheus_client import ProcessCollector as ClientProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runqscale.exporter.families import render
from runqscale.exporter.process import ProcessCollector


def _values(text: str) -> dict[str, tuple[str, float]]:
    return {f.name: (f.type, f.samples[0].value) for f in text_string_to_metric_families(text)}


def test_the_same_families_and_values_as_client_python() -> None:
    reg = CollectorRegistry()
    ClientProcessCollector(registry=reg)
    theirs = _values(generate_latest(reg).decode())
    ours = _values(render(ProcessCollector().collect()).decode())
    assert set(ours) == set(theirs)
    for name, (typ, v) in theirs.items():
        assert ours[name][0] == typ, name
        if name in ("process_start_time_seconds", "process_max_fds", "process_open_fds"):
            assert abs(ours[name][1] - v) <= 1.0, name
        else:  # memory and CPU move between the two reads: same order of magnitude
            assert 0.5 * v <= ours[name][1] <= 2.0 * v + 0.05, (name, ours[name][1], v)


def test_cpu_seconds_count_this_process_work() -> None:
    def cpu() -> float:
        fams = text_string_to_metric_families(render(ProcessCollector().collect()).decode())
        return next(f.samples[0].value for f in fams if f.name == "process_cpu_seconds")
    before, end = cpu(), time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert cpu() - before >= 0.2


def test_the_agent_does_not_import_client_python() -> None:
    code = ("import sys, runqscale.agent.cli, runqscale.agent.daemon_cmd, "
            "runqscale.exporter.server, runqscale.exporter.collector, runqscale.exporter.process; "
            "print(sorted(m for m in sys.modules if m.startswith('prometheus_client') "
            "or m == 'urllib.request'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "[]", out.stdout
