"""The one metric declaration (exporter/metrics.py) against what is served, documented and
queried; and the agent's snapshot: what a scrape renders is the interval it was taken from."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from test_agent_daemon import _setup

from runqscale.exporter import metrics
from runqscale.exporter.families import RowFamily, label_string, render
from runqscale.probes.model import quantile_seconds
from runqscale.scaler import promql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _served(reg) -> dict:
    return {f.name: f for f in text_string_to_metric_families(render(reg.collect()).decode())}


def test_served_families_are_the_declared_ones(tmp_path) -> None:
    root, probe, agent, reg = _setup(tmp_path)
    probe.add(os.stat(root / "a").st_ino, [20_000] * 10)
    agent.step()
    served = _served(reg)
    declared = metrics.CONTAINER_METRICS + metrics.AGENT_METRICS
    assert set(served) == {m.name for m in declared}
    for m in declared:
        fam = served[m.name]
        assert (fam.type, fam.documentation) == (m.type, m.help), m.name
        for s in fam.samples:
            assert set(s.labels) - {"le"} == set(m.labels), (m.name, s.labels)
            assert s.name in m.samples


def test_metrics_md_documents_exactly_the_declared_metrics() -> None:
    with open(os.path.join(ROOT, "exporter", "METRICS.md")) as f:
        rows = re.findall(r"^\| `(runqscale_[a-z0-9_]+)(?:\{[a-z,]+\})?` \| (\w+) \|", f.read(),
                          re.M)
    want = {(m.series if m.type != "histogram" else m.name, m.type)
            for m in metrics.ALL}
    assert set(rows) == want


def test_scaler_promql_uses_declared_names() -> None:
    text = "\n".join([q for _, q in promql.DEFAULT.items()] + [promql.signal_age()])
    assert "runqscale_runqueue_latency_seconds_bucket" in text
    assert not metrics.undeclared(text)


def test_undeclared_finds_names_and_skips_recording_rules() -> None:
    assert metrics.undeclared("rate(runqscale_cpu_usage_seconds_total[1m])") == set()
    assert metrics.undeclared("rate(runqscale_cpu_usage_seconds[1m])") == {
        "runqscale_cpu_usage_seconds"}  # a counter is read with its _total
    assert metrics.undeclared("workload:runqscale_made_up:p95_30s > 1") == set()
    assert metrics.undeclared('runqscale_scaler_leader == 0 or runqscale_nope{a="b"}') == {
        "runqscale_nope"}


def test_declarations_are_unique_and_scaler_names_match_the_dashboard() -> None:
    names = [m.name for m in metrics.ALL]
    assert len(names) == len(set(names))
    assert metrics.SCALER_DECISIONS.labels == ("namespace", "workload", "policy", "action")
    assert metrics.SCALER_STEP_SECONDS.samples == (
        "runqscale_scaler_step_duration_seconds_bucket",
        "runqscale_scaler_step_duration_seconds_count",
        "runqscale_scaler_step_duration_seconds_sum")


def test_snapshot_is_immutable_and_a_scrape_renders_its_interval(tmp_path) -> None:
    root, probe, agent, reg = _setup(tmp_path)
    cid = os.stat(root / "a").st_ino
    probe.add(cid, [20_000] * 10)
    agent.step()
    snap = agent.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.samples = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.containers[0].path = "/b"  # type: ignore[misc]
    before = render(reg.collect())
    probe.add(cid, [40_000_000] * 10)
    agent.step()
    # the old snapshot still says what it said; the agent's next one has the new waits
    new = agent.snapshot()
    assert snap.total(snap.containers[0]).count == 10 and snap.samples == 1
    assert new.total(new.containers[0]).count == 20
    assert quantile_seconds(snap.window()[0], 0.95) < 1e-3
    assert quantile_seconds(new.window()[0], 0.95) > 30e-3
    with pytest.raises(ValueError):  # the interval's matrices are read-only too
        snap.cumulative[0, 0] = 1
    after = render(reg.collect())
    assert before != after and b"runqscale_agent_events_total 20.0" in after


def test_failed_sample_is_counted_in_a_new_snapshot(tmp_path) -> None:
    root, probe, agent, reg = _setup(tmp_path)
    agent.step()
    first = agent.snapshot()
    probe.fail_next = True
    assert not agent.step()
    assert agent.snapshot().sample_errors == 1 and first.sample_errors == 0
    assert agent.snapshot().containers == first.containers


def test_a_scrape_of_500_histograms_streams_in_small_pieces_that_parse_whole() -> None:
    # 500 containers' histograms are ~4 MB of text: each piece stays near 100 KB (a scrape's
    # peak memory is a few pieces), and the pieces together are the exposition, every row once
    from runqscale.exporter.buckets import LE_STRINGS
    from runqscale.exporter.families import RowFamily, iter_chunks

    fam = RowFamily("runqscale_runq_latency_seconds", "doc", "histogram",
                    ("namespace", "pod", "container"), LE_STRINGS)
    gauge = RowFamily("runqscale_runq_latency_p95_seconds", "doc", "gauge",
                      ("namespace", "pod", "container"))
    for i in range(500):
        values = ("default", f"pod-{i:03d}-" + "x" * 60, "c")
        lbl = f'namespace="default",pod="{values[1]}",container="c"'
        fam.add(values, lbl, (list(range(i, i + len(LE_STRINGS))), i / 1e3))
        gauge.add(values, lbl, i / 1e6)
    pieces = list(iter_chunks([fam, gauge]))
    assert max(len(p) for p in pieces) < 200_000
    whole = []
    for f in (fam, gauge):
        f.render(whole)  # every row in one piece, as before pieces existed
    assert b"".join(pieces) == "".join(whole).encode()
    parsed = {f.name: f for f in text_string_to_metric_families(b"".join(pieces).decode())}
    hist = parsed["runqscale_runq_latency_seconds"]
    assert sum(s.name.endswith("_count") for s in hist.samples) == 500
    assert len(parsed["runqscale_runq_latency_p95_seconds"].samples) == 500


_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**63, 2**64))


@given(st.lists(_VALUES, min_size=1, max_size=30), st.sampled_from(["gauge", "counter"]))
@settings(max_examples=200, deadline=None)
def test_gauge_and_counter_values_parse_back_exactly(values: list, typ: str) -> None:
    """Whatever the values (NaN, ±Inf, huge ints, subnormals), the text a family renders parses
    back to the same numbers, each on its own labelled line."""
    fam = RowFamily("rq_test", "doc", typ, ("i",))
    for i, v in enumerate(values):
        fam.add((str(i),), label_string(("i",), (str(i),)), v)
    text = render([fam]).decode()
    for line in text.splitlines():  # the text format's spellings, not Python's nan/inf
        if not line.startswith("#"):
            token = line.rsplit(" ", 1)[1]
            assert token in ("NaN", "+Inf", "-Inf") or re.fullmatch(
                r"-?[0-9]+(\.[0-9]+)?(e[+-][0-9]+)?", token), line
    parsed = list(text_string_to_metric_families(text))
    assert len(parsed) == 1
    got = {s.labels["i"]: s.value for s in parsed[0].samples}
    assert len(got) == len(values)
    for i, v in enumerate(values):
        g = got[str(i)]
        assert (g != g and v != v) or g == v, (v, g)
