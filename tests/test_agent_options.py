"""The agent's flags (agent/options.py): one argparse parser for the DaemonSet's
`python -m runqscale.agent` and for `runqscale agent`. What a user relies on: the documented
defaults, a flag winning over --config and --config over the default, values from the file
checked as flags are, and every mistake one line naming the option, exit code 2."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runqscale.agent.options import DEFAULTS, AgentOptions, build_parser, parse_agent_args


def parse_error(argv: list[str]) -> str:
    """The one line a rejected command line prints (exit code 2 asserted)."""
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as e:
        parse_agent_args(argv)
    assert e.value.code == 2, err.getvalue()
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1, err.getvalue()
    assert lines[0].startswith("runqscale agent: error: "), lines[0]
    return lines[0]


def test_every_option_has_a_default_and_a_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-a")
    assert set(DEFAULTS) == {f.name for f in dataclasses.fields(AgentOptions)}
    dests = {a.dest for a in build_parser()._actions} - {"help", "config"}
    assert dests == set(DEFAULTS)
    o = parse_agent_args([])
    assert o == AgentOptions(**{**DEFAULTS, "node_name": "node-a"})
    assert o.listen == ("0.0.0.0", 9100) and o.interval == 1.0 and o.window == 10.0


def test_flags_are_converted_as_documented() -> None:
    o = parse_agent_args(["--listen", "127.0.0.1:9200", "--interval", "500ms", "--window",
                          "2m", "--cgroup", "kubepods", "--cgroup", "/system.slice",
                          "--max-cgroups", "16", "--gzip", "--kubelet-insecure-tls",
                          "--backend", "bcc", "--node-name", "n1"])
    assert o.listen == ("127.0.0.1", 9200) and o.interval == 0.5 and o.window == 120.0
    assert o.cgroups == ("kubepods", "/system.slice") and o.max_cgroups == 16
    assert o.gzip and o.kubelet_insecure_tls and o.backend == "bcc" and o.node_name == "n1"
    assert not parse_agent_args(["--gzip", "--no-gzip"]).gzip


def test_a_flag_wins_over_the_config_file_and_the_file_over_the_default(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({"interval": "250ms", "listen": ":9300", "cgroups": ["a", "b"],
                               "max_cgroups": 64, "gzip": True, "pods-source": "none"}))
    o = parse_agent_args(["--config", str(cfg), "--interval", "2s", "--cgroup", "c"])
    assert o.interval == 2.0  # the flag
    assert o.cgroups == ("c",)  # a repeated flag replaces the file's list, not extends it
    assert o.listen == ("0.0.0.0", 9300) and o.max_cgroups == 64 and o.gzip
    assert o.pods_source == "none"
    assert o.window == 10.0  # neither: the default
    assert not parse_agent_args(["--config", str(cfg), "--no-gzip"]).gzip


def test_a_yaml_config_with_one_value_for_a_repeatable_option(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("cgroup: kubepods\nwindow: 30\n")
    o = parse_agent_args(["--config", str(cfg)])
    assert o.cgroups == ("kubepods",) and o.window == 30.0


@pytest.mark.parametrize(("argv", "named"), [
    (["--interval", "1x"], "--interval"),
    (["--interval", "0"], "--interval"),
    (["--window", "nan"], "--window"),
    (["--listen", "9100"], "--listen"),
    (["--max-cgroups", "15"], "--max-cgroups"),
    (["--max-cgroups", "many"], "--max-cgroups"),
    (["--backend", "ebpf"], "--backend"),
    (["--tls-cert", "/no/such/file"], "--tls-cert"),
    (["--auth-token-file", "/"], "--auth-token-file"),
    (["--bogus"], "--bogus"),
    (["--interval"], "--interval"),
    (["--inter", "1s"], "--inter"),  # no abbreviations (a typo must not pick an option)
    (["extra"], "extra"),
])
def test_a_bad_flag_is_one_line_naming_it(argv: list[str], named: str) -> None:
    assert named in parse_error(argv)


@pytest.mark.parametrize(("text", "named"), [
    ("interval: .nan\n", "--interval"),
    ("listen: 9100\n", "--listen"),
    ("backend: ebpf\n", "--backend"),
    ("max-cgroups: 2\n", "--max-cgroups"),
    ("gzip: yes please\n", "gzip"),
    ("tls_cert: /no/such/file\n", "--tls-cert"),
    ("pods_file: 5\n", "pods_file"),
    ("cgroups: [a, [b]]\n", "cgroups"),
    ("intervall: 1s\n", "did you mean 'interval'"),
    ("- a\n", "mapping"),
    ("interval: [\n", "not valid YAML"),
])
def test_a_bad_config_value_is_one_line_naming_the_key(tmp_path: Path, text: str,
                                                       named: str) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(text)
    line = parse_error(["--config", str(cfg)])
    assert named in line and str(cfg) in line, line


_OPTIONS = [o for a in build_parser()._actions for o in a.option_strings if o.startswith("--")]
_WORDS = st.one_of(st.sampled_from(["", "0", "-1", "nan", "inf", "1e400", "5ms", "abc", ":0",
                                    "[::1]:9100", "/", "16", "auto", "none", "--gzip"]),
                   st.text(max_size=8))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=st.lists(st.one_of(st.sampled_from(_OPTIONS), _WORDS), max_size=6))
def test_any_command_line_parses_or_fails_in_one_line(argv: list[str]) -> None:
    err = io.StringIO()
    try:
        with redirect_stderr(err):
            o = parse_agent_args(argv)
    except SystemExit as e:
        assert e.code in (0, 2), (argv, err.getvalue())  # 0: --help
        if e.code == 2:
            assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
        return
    assert isinstance(o, AgentOptions) and o.interval > 0 and o.max_cgroups >= 16


@pytest.mark.parametrize("command", [["-m", "runqscale.agent"], ["-m", "runqscale.cli", "agent"]])
def test_both_entry_points_are_the_one_parser(command: list[str]) -> None:
    """`python -m runqscale.agent` (the DaemonSet's) and `runqscale agent` print the same help
    and the same one-line error."""
    out = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True,
                         cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: runqscale agent") and "--max-cgroups" in out.stdout
    bad = subprocess.run([sys.executable, *command, "--interval", "soon"], capture_output=True,
                         text=True, cwd="/", timeout=60)
    assert bad.returncode == 2
    assert bad.stderr == "runqscale agent: error: --interval: 'soon' is not a duration; write " \
                         "e.g. 500ms, 1s, 2.5s or 5m\n"


def test_a_typo_names_the_option_meant() -> None:
    line = parse_error(["--intervall", "1s"])
    assert "no such option --intervall; did you mean --interval?" in line, line
    assert "see --help" in parse_error(["--zzz"])


def test_a_value_starting_with_a_dash_says_how_to_give_it() -> None:
    assert "--cgroup=VALUE" in parse_error(["--cgroup", "-x"])
    assert parse_agent_args(["--cgroup=-x"]).cgroups == ("-x",)


def test_a_config_error_names_the_key_as_the_file_spells_it(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("max-cgroups: 2\n")
    assert "key 'max-cgroups' (--max-cgroups)" in parse_error(["--config", str(cfg)])


def test_an_unreadable_file_is_refused_naming_the_option(tmp_path: Path) -> None:
    """As a user who cannot read it (root reads anything: the check runs as nobody there)."""
    import os
    import shutil

    secret = tmp_path / "ca.pem"
    secret.write_text("x")
    secret.chmod(0o600)
    argv = ["--kubelet-ca-file", str(secret)]
    if os.geteuid() != 0:
        secret.chmod(0)
        assert "--kubelet-ca-file" in parse_error(argv) and "not readable" in parse_error(argv)
        return
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to run this as nobody"
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # pytest's tmp is root's alone
        os.chmod(d, 0o755)
        secret = Path(shutil.copy(secret, d))
        secret.chmod(0o600)
        argv = ["--kubelet-ca-file", str(secret)]
        code = ("from runqscale.agent.options import parse_agent_args as p; import sys; "
                "p(sys.argv[1:])")
        out = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup",
                              "--clear-groups", sys.executable, "-c", code, *argv],
                             capture_output=True, text=True, cwd="/", timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("runqscale agent: error: --kubelet-ca-file: ") and \
        "not readable" in out.stderr, out.stderr
