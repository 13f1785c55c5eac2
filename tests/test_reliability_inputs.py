"""Bad-input fuzzing (issue 10): CLI flags, config files, annotations, trace files, Prometheus
answers, kubelet pod lists, the recommendations log.

The property everywhere: never a traceback. A command given bad usage or input exits 2 with
exactly one line on stderr that names the option, key, field or file:line; a library function
raises its module's documented error type (SignalsError, PrometheusError, TraceError,
AnnotationError, LogError) or, for answers it is documented to tolerate, returns with warnings;
the agent's pod-list parser keeps the well-formed pods when one is bad.

Commands run in-process through `runqscale.agent.cli.run` (the console entry point, so the
one-line error handling is the real one) under click's CliRunner isolation; a few run as
subprocesses. Example counts are the `settings(max_examples=...)` below (docs/reliability.md).
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runqscale.agent import cli as agent_cli
from runqscale.agent.pods import PodInfo, parse_pod_list
from runqscale.scaler import log, prometheus_source, signals
from runqscale.scaler.k8s import annotations as ann
from runqscale.scaler.model import ScalerConfig
from runqscale.scaler.policies import POLICIES
from runqscale.validation.traces import TraceError, choose_segment, load_trace

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
FAST = settings(FUZZ, max_examples=150)

ROOT = Path(__file__).resolve().parent.parent


def _sample(ts: float, wl: str = "default/web", **kw: object) -> dict:
    base = {
        "ts": ts, "workload": wl, "replicas": 2, "ready_replicas": 2, "cpu_usage_cores": 1.0,
        "cpu_request_cores": 0.5, "cpu_limit_cores": 1.0, "runq_p95_seconds": 0.01,
        "throttled_ratio": 0.1, "request_rate": 10.0,
    }
    base.update(kw)
    return base


@pytest.fixture
def good_signals(tmp_path: Path) -> Path:
    p = tmp_path / "signals.jsonl"
    p.write_text("".join(json.dumps(_sample(1000.0 + i)) + "\n" for i in range(12)))
    return p


class _Reached(Exception):
    """Raised by a patched probe opener: the command accepted its input and got to the kernel."""


@contextmanager
def _no_kernel(monkeypatch: pytest.MonkeyPatch):
    """Commands that pass input validation stop before BPF: the opener raises _Reached."""
    import runqscale.probes.backends as backends

    def opener(*a: object, **k: object) -> None:
        raise _Reached()

    monkeypatch.setattr(backends, "open_probe", opener)
    import runqscale.agent.probe_cmd as probe_cmd

    monkeypatch.setattr(probe_cmd, "open_probe", opener)
    yield


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """`runqscale ARGS` in-process through the console entry point; (exit code, stdout, stderr).
    Any exception but SystemExit/_Reached propagates: that is a traceback, the failure sought."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        old = sys.argv
        sys.argv = ["runqscale", *args]
        try:
            agent_cli.run()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except _Reached:
            code = -1  # input accepted; would open the probe now
        finally:
            sys.argv = old
        return code, out.getvalue().decode(), err.getvalue().decode()


def assert_one_line_error(code: int, err: str, *names: str) -> None:
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    if names:
        assert any(n in lines[0] for n in names), (names, lines[0])


def assert_clean(code: int, err: str) -> None:
    """No traceback; a failure is one line (usage 2, runtime 1)."""
    assert "Traceback" not in err, err
    if code in (1, 2):
        assert len(err.strip().splitlines()) == 1, err
    else:
        assert code in (0, -1), (code, err)


# --------------------------------------------------------------------------- CLI flags

_words = st.one_of(
    st.sampled_from(["", "0", "-1", "nan", "inf", "-inf", "1e400", "1e-400", "abc", "5ms",
                     "1e9h", "99999999999999999999", "0x10", "1_000", " ", "/", "a/b/c",
                     "default/web", "http://", "showar", "\x00", "µs", "1.5.5", "--once"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=12),
)
_SCALER_OPTS = ["--policy", "--target-runq-p95", "--target-cpu", "--max-cpu-per-replica",
                "--min-cpu-per-replica", "--period", "--window", "--rate-window",
                "--min-replicas", "--max-replicas", "--workload", "--iterations",
                "--prometheus", "--config", "--log"]


@FUZZ
@given(opts=st.lists(st.tuples(st.sampled_from(_SCALER_OPTS), _words), min_size=1, max_size=3))
def test_scaler_flags_never_traceback(opts, good_signals, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["scaler", "--signals", str(good_signals), "--once"]
    for o, v in opts:
        args += [o, v]
    code, _, err = run_cli(args)
    assert code in (0, 2), (args, code, err)
    if code == 2:
        assert_one_line_error(code, err)
    else:
        assert "Traceback" not in err


@pytest.mark.parametrize("opt,value", [
    ("--target-cpu", "nan"), ("--max-cpu-per-replica", "inf"), ("--min-cpu-per-replica", "nan"),
    ("--period", "1e300"), ("--window", "0"), ("--target-runq-p95", "1e400ms"),
    ("--log", "/nonexistent-dir/recs.jsonl"), ("--workload", "nope"), ("--min-replicas", "-1"),
])
def test_scaler_bad_flag_names_the_option(opt, value, good_signals):
    code, _, err = run_cli(["scaler", "--signals", str(good_signals), "--once", opt, value])
    assert_one_line_error(code, err, opt)


@FUZZ
@given(interval=_words)
def test_probe_interval_never_traceback(interval, monkeypatch):
    with _no_kernel(monkeypatch):
        code, _, err = run_cli(["probe", "--interval", interval, "--count", "1"])
    # the hierarchy may be missing in a container: then a one-line usage error too
    assert_clean(code, err)
    if code == 2 and "--interval" not in err:
        assert "hierarchy" in err or "cgroup" in err, err


@pytest.mark.parametrize("value", ["nan", "0", "-1s", "1e9h", "99999999999h", "5 parsecs"])
def test_probe_bad_interval_is_one_line(value, monkeypatch):
    with _no_kernel(monkeypatch):
        code, _, err = run_cli(["probe", "--interval", value])
    assert_one_line_error(code, err, "--interval")


# --------------------------------------------------------------------------- trace files

_trace_line = st.one_of(
    st.builds(lambda t, c: f"{t},{c}",
              st.one_of(st.integers(-10, 10**12).map(str), st.floats().map(repr),
                        st.sampled_from(["1998-06-25 00:00", "1998-13-01 00:00", "period", "",
                                         "2026-01-01T00:00:00", "1e308"])),
              st.one_of(st.integers(-5, 10**6).map(str), st.floats().map(repr),
                        st.sampled_from(["count", "", "x", "1e400"]))),
    st.lists(st.one_of(st.integers(-3, 1000).map(str), st.floats().map(repr)), max_size=4)
    .map(" ".join),
    st.sampled_from(["# comment", "", "a,b,c", ",", "\ufeff0,1"]),
    st.text(max_size=20),
)


@FAST
@given(lines=st.lists(_trace_line, max_size=8), duration=st.floats(1, 1e5))
def test_trace_files_raise_only_trace_error(lines, duration, tmp_path):
    p = tmp_path / "trace.txt"
    p.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        tr = load_trace(str(p))
    except TraceError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(str(p)), msg
        return
    assert tr.counts.size >= 1 and math.isfinite(tr.seconds) and tr.seconds > 0
    assert all(math.isfinite(x) and x >= 0 for x in tr.counts)
    try:
        choose_segment(tr, duration, 1.0)
    except ValueError:  # documented: an empty segment / no requests (TraceError is a ValueError)
        pass


def test_trace_with_an_unreplayable_span_is_a_trace_error(tmp_path):
    # found by fuzzing: a span of 1e308 s made choose_segment fail with OverflowError
    p = tmp_path / "t.csv"
    p.write_text("0,1\n1e308,1\n")
    with pytest.raises(TraceError, match=r"t\.csv:2"):
        load_trace(str(p))


@pytest.mark.parametrize("body", ["0,1\n0,2\n", "a,b\n", "1998-06-25 00:00,x\n", "1 2 -3\n",
                                  "0,1\n1e308,1\n", "\xff\xfe"])
def test_validate_trace_errors_are_one_line_with_file_line(body, tmp_path, monkeypatch):
    p = tmp_path / "trace.csv"
    p.write_bytes(body.encode("latin-1"))
    with _no_kernel(monkeypatch):
        code, _, err = run_cli(["validate", "--trace", str(p), "--duration", "10s"])
    assert_one_line_error(code, err, str(p))


@FUZZ
@given(body=st.lists(_trace_line, max_size=5).map("\n".join))
def test_validate_trace_never_traceback(body, tmp_path, monkeypatch):
    p = tmp_path / "trace.csv"
    p.write_text(body, encoding="utf-8", errors="surrogatepass")
    with _no_kernel(monkeypatch):
        code, _, err = run_cli(["validate", "--trace", str(p), "--duration", "10s",
                                "--policies", "static"])
    assert_clean(code, err)


# --------------------------------------------------------------------------- config files

_toml_value = st.one_of(
    st.integers(-10**20, 10**20), st.floats(), st.booleans(), _words,
    st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.sampled_from("ab"),
                                                             st.integers(0, 3), max_size=2),
)
_SCALER_KEYS = [o.lstrip("-") for o in _SCALER_OPTS if o != "--config"] + [
    "signals", "once", "json", "dry-run", "max_replicas", "bogus"]


def _toml_dump(d: dict) -> str:
    def val(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") \
                if math.isinf(v) else repr(v)
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return "{" + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + "}"  # type: ignore

    return "[scaler]\n" + "".join(f"{json.dumps(k)} = {val(v)}\n" for k, v in d.items())


@FUZZ
@given(cfg=st.dictionaries(st.sampled_from(_SCALER_KEYS), _toml_value, max_size=4),
       garbage=st.booleans())
def test_scaler_toml_config_never_traceback(cfg, garbage, good_signals, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg.pop("prometheus", None)  # a valid URL would make the scaler loop over the network
    p = tmp_path / "scaler.toml"
    text = _toml_dump(cfg)
    p.write_text(text + ("= = [\n" if garbage else ""))
    code, _, err = run_cli(["scaler", "--config", str(p), "--signals", str(good_signals),
                            "--once"])
    assert code in (0, 2), (text, code, err)
    if code == 2:
        assert_one_line_error(code, err)


@pytest.mark.parametrize("text,name", [
    ('signals = [1, 2]\n', "signals"), ("log = 5\n", "log"), ("policy = 5\n", "--policy"),
    ("scaler = 5\n", "scaler"), ("max-cpu-per-replica = inf\n", "--max-cpu-per-replica"),
    ("window = {a = 1}\n", "window"), ("bogus = 1\n", "bogus"), ("= x", "not TOML"),
])
def test_scaler_config_errors_name_the_key(text, name, good_signals, tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(text)
    code, _, err = run_cli(["scaler", "--config", str(p), "--signals", str(good_signals),
                            "--once"])
    assert_one_line_error(code, err, name)


_AGENT_KEYS = ["interval", "window", "listen", "backend", "hierarchy", "node-name", "pods_source",
               "pods-file", "kubelet-url", "cgroups", "max-cgroups", "pods-refresh", "tls-cert",
               "auth-token-file", "kubelet-insecure-tls", "bogus", "intervall"]
_yaml_value = st.one_of(_toml_value, st.none(), st.sampled_from([".nan", ".inf", "~", "[a, [b]]"]))


@FUZZ
@given(cfg=st.dictionaries(st.sampled_from(_AGENT_KEYS), _yaml_value, max_size=4),
       as_json=st.booleans(), garbage=st.sampled_from(["", "{", "- a\n", ": :\n", "\x00"]))
def test_agent_config_never_traceback(cfg, as_json, garbage, tmp_path, monkeypatch):
    import runqscale.probes.cgroupfs as cgroupfs

    def mounts() -> None:
        raise _Reached()

    monkeypatch.setattr(cgroupfs.CgroupMounts, "read", staticmethod(mounts))
    cfg = {k: (v if not isinstance(v, float) or math.isfinite(v) or not as_json else str(v))
           for k, v in cfg.items()}
    if as_json:
        p = tmp_path / "agent.json"
        p.write_text(json.dumps(cfg) + garbage)
    else:
        import yaml

        p = tmp_path / "agent.yaml"
        p.write_text(yaml.safe_dump(cfg) + garbage)
    code, _, err = run_cli(["agent", "--config", str(p)])
    assert_clean(code, err)
    if code == 2:
        assert str(p) in err or "Invalid value" in err or "--" in err, err


@pytest.mark.parametrize("text,name", [
    ("interval: .nan\n", "--interval"), ("window: 99999999999h\n", "--window"),
    ("pods_file: 5\n", "pods_file"), ("kubelet_url: {a: 1}\n", "kubelet_url"),
    ("cgroups: [a, [b]]\n", "cgroups"), ("intervall: 1s\n", "intervall"), ("- a\n", "mapping"),
    ("interval: [\n", "not valid YAML"),
])
def test_agent_config_errors_name_the_key(text, name, tmp_path, monkeypatch):
    import runqscale.probes.cgroupfs as cgroupfs

    monkeypatch.setattr(cgroupfs.CgroupMounts, "read", staticmethod(lambda: (_ for _ in ()).throw(
        _Reached())))
    p = tmp_path / "agent.yaml"
    p.write_text(text)
    code, _, err = run_cli(["agent", "--config", str(p)])
    assert_one_line_error(code, err, name)


# --------------------------------------------------------------------------- annotations

_ann_value = st.one_of(
    st.sampled_from(["showar", "hpa", " showar ", "SHOWAR", "", "2", "0", "-1", "10", "1.5",
                     "99999999999999999999", "5ms", "0ms", "1e400s", "9" * 400 + "ms", "5", "µs",
                     "٣", "5 ms"]),
    st.text(max_size=10),
)
_ann_key = st.sampled_from([ann.POLICY, ann.MIN_REPLICAS, ann.MAX_REPLICAS, ann.TARGET_RUNQ_P95,
                            "runqscale.io/polcy", "runqscale.io/", "other.io/x"])


@FAST
@given(a=st.dictionaries(_ann_key, _ann_value, max_size=5))
def test_annotations_raise_only_annotation_error(a):
    try:
        spec = ann.parse(a, ScalerConfig(), tuple(POLICIES))
    except ann.AnnotationError as e:
        assert "\n" not in str(e) and str(e).startswith(e.annotation), str(e)
        assert e.annotation in a
        return
    if spec is None:
        assert ann.POLICY not in a
        return
    c = spec.config
    assert spec.policy in POLICIES
    assert 0 <= c.min_replicas and c.max_replicas >= max(c.min_replicas, 1)
    assert 0 < c.target_runq_p95_seconds < math.inf


# --------------------------------------------------------------------------- signals file

_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))
_field_names = st.sampled_from(["ts", "workload", "replicas", "ready_replicas", "cpu_usage_cores",
                                "cpu_request_cores", "cpu_limit_cores", "runq_p95_seconds",
                                "throttled_ratio", "request_rate", "pressure", "pods"])


@FAST
@given(overrides=st.dictionaries(_field_names, st.one_of(
    _json_scalar, st.lists(st.one_of(_json_scalar, st.dictionaries(
        st.sampled_from(["name", "node", "ready", "start_ts", "cpu_usage_cores", "phase"]),
        _json_scalar, max_size=3)), max_size=2)), max_size=3),
    raw=st.sampled_from(["", "{", "[]", "NaN", '{"ts": Infinity}', "1e999", '"x"', "null"]))
def test_signals_file_raises_only_signals_error(overrides, raw, tmp_path):
    p = tmp_path / "s.jsonl"
    lines = [json.dumps(_sample(1.0)), json.dumps({**_sample(2.0), **overrides})]
    if raw:
        lines.append(raw)
    p.write_text("\n".join(lines) + "\n")
    try:
        samples = signals.read_file(p)
    except signals.SignalsError as e:
        assert "\n" not in str(e) and e.where.startswith(str(p)), str(e)
        return
    signals.windows_from_samples(samples)


# --------------------------------------------------------------------------- Prometheus answers

_point = st.one_of(
    st.tuples(st.just("NOW"), st.sampled_from(["1", "NaN", "+Inf", "-Inf", "1e400", "-1", "x", "",
                                               "0.5", "99999999"])).map(list),
    st.tuples(st.sampled_from(["STALE", "FUTURE", "NaN", "x", None, True, 10**400]),
              st.just("1")).map(list),
    _json_scalar, st.just([]), st.just({"0": 1}), st.lists(_json_scalar, max_size=3),
)
_series = st.one_of(
    st.fixed_dictionaries({
        "metric": st.one_of(st.fixed_dictionaries({"namespace": st.sampled_from(["default", 5, ""]),
                                                   "workload": st.sampled_from(["web", None])}),
                            _json_scalar, st.just([])),
        "values": st.one_of(st.lists(_point, max_size=4), _json_scalar, st.just({"a": 1})),
    }),
    _json_scalar, st.just([]),
)
_answer = st.one_of(
    st.builds(lambda r: {"status": "success", "data": {"resultType": "matrix", "result": r}},
              st.one_of(st.lists(_series, max_size=3), _json_scalar)),
    st.builds(lambda d: {"status": "success", "data": d},
              st.one_of(_json_scalar, st.just({"resultType": "vector", "result": []}))),
    st.builds(lambda s, e: {"status": s, "error": e}, st.sampled_from(["error", None, 1]),
              _json_scalar),
    st.sampled_from([[], "x", None, 1]),
)


class _Resp(io.BytesIO):
    def __enter__(self) -> _Resp:
        return self

    def __exit__(self, *a: object) -> None:
        self.close()


NOW = 1_750_000_000.0


def _encode(answer: object) -> bytes:
    text = json.dumps(answer)
    return (text.replace('"NOW"', str(NOW - 5)).replace('"STALE"', str(NOW - 100_000))
            .replace('"FUTURE"', str(NOW + 10**7)).encode())


@FAST
@given(answer=_answer, raw=st.sampled_from([None, b"", b"not json", b"{", b"\xff", b"[1,"]))
def test_prometheus_answers_raise_only_prometheus_error(answer, raw, monkeypatch):
    body = _encode(answer) if raw is None else raw
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _Resp(body))
    src = prometheus_source.PrometheusSource("http://prom.invalid:9090",
                                   queries={"runq_p95_seconds": "q", "replicas": "r"})
    try:
        fetched = src.fetch(NOW, 300.0, 15.0)
    except prometheus_source.PrometheusError as e:
        assert "\n" not in str(e) and "prom.invalid" in str(e)
        return
    for s in fetched.samples:
        for k in signals.LIMITS:
            v = getattr(s, k)
            assert v is None or (math.isfinite(v) and v >= 0), (k, v)
        assert NOW - s.ts <= src.staleness
    signals.windows_from_samples(fetched.samples)


def test_prometheus_nan_inf_stale_become_missing_with_warnings(monkeypatch):
    series = {"metric": {"namespace": "default", "workload": "web"},
              "values": [[NOW - 30, "NaN"], [NOW - 20, "+Inf"], [NOW - 10_000, "0.2"],
                         [NOW - 5, "1e400"], [NOW - 1, "0.004"]]}
    answer = {"status": "success", "data": {"resultType": "matrix", "result": [series]}}
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _Resp(_encode(answer)))
    src = prometheus_source.PrometheusSource("http://p:9090", queries={"runq_p95_seconds": "q"})
    f = src.fetch(NOW, 300.0, 15.0)
    got = {s.ts: s.runq_p95_seconds for s in f.samples}
    assert got == {NOW - 30: None, NOW - 20: None, NOW - 5: None, NOW - 1: 0.004}
    assert len(f.warnings) == 4


def test_scaler_cli_against_a_garbage_prometheus_is_one_line(tmp_path):
    """Subprocess, real HTTP: a server answering non-JSON -> exit 1, one line, no traceback."""
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>not prometheus</html>")

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = subprocess.run([sys.executable, "-m", "runqscale.agent.cli", "scaler", "--prometheus",
                            f"http://127.0.0.1:{srv.server_address[1]}", "--once"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        srv.shutdown()
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "not JSON" in r.stderr


# --------------------------------------------------------------------------- kubelet pod lists

def _good_pod(i: int) -> dict:
    return {"metadata": {"uid": f"UID-{i}", "namespace": "ns", "name": f"p{i}"},
            "status": {"containerStatuses": [
                {"name": "c", "containerID": f"containerd://{i:064x}"}]}}


_bad_pod = st.one_of(
    _json_scalar, st.just([]),
    st.fixed_dictionaries({"metadata": st.one_of(_json_scalar, st.just([]), st.fixed_dictionaries(
        {"uid": _json_scalar, "namespace": _json_scalar, "name": _json_scalar}))}),
    st.fixed_dictionaries({
        "metadata": st.just({"uid": "bad-uid", "namespace": "ns", "name": "b"}),
        "status": st.one_of(_json_scalar, st.just([]), st.fixed_dictionaries({
            "containerStatuses": st.one_of(_json_scalar, st.just({"a": 1}), st.lists(
                st.one_of(_json_scalar, st.fixed_dictionaries(
                    {"name": _json_scalar, "containerID": _json_scalar})), max_size=2))}))}),
)


@FAST
@given(bad=st.lists(_bad_pod, min_size=1, max_size=3), n_good=st.integers(0, 3),
       pos=st.integers(0, 3))
def test_pod_list_keeps_the_good_pods(bad, n_good, pos):
    good = [_good_pod(i) for i in range(n_good)]
    items = good[:pos] + bad + good[pos:]
    out = parse_pod_list({"kind": "PodList", "items": items})
    for i in range(n_good):
        info = out[f"uid-{i}"]
        assert info == PodInfo(f"uid-{i}", "ns", f"p{i}", {f"{i:064x}": "c"})
    for info in out.values():
        assert isinstance(info.namespace, str) and isinstance(info.name, str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in info.containers.items())


@pytest.mark.parametrize("doc", [[], "x", None, 5, {"items": 5}, {"items": {"a": 1}}])
def test_pod_list_that_is_not_a_pod_list_is_a_value_error(doc):
    with pytest.raises(ValueError):
        parse_pod_list(doc)  # type: ignore[arg-type]


def test_file_pod_source_survives_a_bad_file(tmp_path):
    from runqscale.agent.pods import FilePodSource

    p = tmp_path / "pods.json"
    p.write_text(json.dumps({"items": [_good_pod(1), 5, {"metadata": []}]}))
    src = FilePodSource(str(p))
    assert set(src.table().pods) == {"uid-1"}
    p.write_text("{not json")
    src.poll()
    assert set(src.table().pods) == {"uid-1"} and src.errors == 1


# --------------------------------------------------------------------------- recommendations log

@FAST
@given(lines=st.lists(st.one_of(
    st.sampled_from(['{"ts": 1', "{}", "[]", "null", '{"ts": Infinity}', "\xff",
                     '{"ts":1,"workload":{"namespace":"a","name":"b"},"policy":"p","current":'
                     '{"replicas":Infinity},"recommended":{"replicas":1},"action":"none",'
                     '"reason":"","dry_run":true,"applied":false}',
                     '{"ts":1,"workload":"a/b","policy":"p"}']),
    st.text(max_size=30)), max_size=5), terminated=st.booleans())
def test_log_reader_raises_only_log_error(lines, terminated, tmp_path):
    p = tmp_path / "recs.jsonl"
    text = "\n".join(lines) + ("\n" if terminated else "")
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        log.read(p)
    except log.LogError as e:
        assert str(e).startswith(f"{p}:{e.line}:") and "\n" not in str(e)


def test_report_of_a_garbage_log_is_one_line(tmp_path):
    p = tmp_path / "recs.jsonl"
    p.write_text('{"ts": 1}\n{"ts": 2}\n')
    code, _, err = run_cli(["scaler", "report", str(p)])
    assert_one_line_error(code, err, f"{p}:1")


def test_a_few_errors_via_the_real_console_script(tmp_path):
    """Subprocess: the installed entry point behaves as in-process (one line, exit 2)."""
    exe = Path(sys.executable).with_name("runqscale")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "runqscale.agent.cli"]
    bad = tmp_path / "s.jsonl"
    bad.write_text(json.dumps(_sample(1.0, replicas=10**400 if False else "x")) + "\n")
    for args, name in [(["scaler", "--signals", str(bad), "--once"], f"{bad}:1"),
                       (["scaler", "--target-cpu", "nan"], "--target-cpu"),
                       (["probe", "--interval", "nan"], "--interval")]:
        r = subprocess.run(cmd + args, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and name in r.stderr, r.stderr


def test_signals_integer_beyond_float_range_is_a_signals_error(tmp_path):
    # found while fuzzing: float(10**400) raised OverflowError out of the parser
    p = tmp_path / "s.jsonl"
    line = json.dumps(_sample(1.0)).replace('"replicas": 2', '"replicas": 1' + "0" * 400)
    p.write_text(line + "\n")
    with pytest.raises(signals.SignalsError, match="replicas"):
        signals.read_file(p)
    p.write_text(json.dumps(_sample(1.0)).replace('"ts": 1.0', '"ts": 1' + "0" * 400) + "\n")
    with pytest.raises(signals.SignalsError, match="ts"):
        signals.read_file(p)


def test_annotation_duration_beyond_float_range_is_an_annotation_error():
    with pytest.raises(ann.AnnotationError, match="target-runq-p95"):
        ann.parse({ann.POLICY: "showar", ann.TARGET_RUNQ_P95: "9" * 400 + "ms"}, ScalerConfig(),
                  tuple(POLICIES))
