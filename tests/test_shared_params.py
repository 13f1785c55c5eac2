"""The helpers every command shares: durations, --config files, rotating token files, free ports."""

from __future__ import annotations

import os
import socket

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from runqscale.config import ConfigError, option_defaults
from runqscale.params import DURATION, DURATION_OR_ZERO
from runqscale.ports import free_port
from runqscale.tokens import TokenFile
from runqscale.values import parse_duration

# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [
    ("500ms", 0.5), ("1s", 1.0), ("2.5s", 2.5), ("5m", 300.0), ("1min", 60.0), ("1.5h", 5400.0),
    ("100us", 1e-4), ("100µs", 1e-4), ("250ns", 2.5e-7), ("0.005", 0.005), ("1e-3", 1e-3),
    (" 7 ", 7.0), (3, 3.0), (0.25, 0.25),
])
def test_duration_accepts_the_agent_and_scaler_spellings(text, seconds) -> None:
    assert DURATION.convert(text, None, None) == pytest.approx(seconds)


@pytest.mark.parametrize("text,msg", [
    ("soon", "not a duration"), ("5 parsecs", "not a duration"), ("-1s", "not a duration"),
    (True, "not a duration"), ("0s", "greater than zero"), ("1e400ms", "finite"),
    ("99999999999h", "at most"),
])
def test_duration_rejects_with_the_reason(text, msg) -> None:
    with pytest.raises(click.BadParameter, match=msg):
        DURATION.convert(text, None, None)


def test_duration_or_zero_takes_zero_as_off() -> None:
    # `validate --affinity-seconds 0` skips the affinity experiment, as its help says
    assert DURATION_OR_ZERO.convert("0", None, None) == 0.0
    assert DURATION_OR_ZERO.convert("0s", None, None) == 0.0
    assert DURATION_OR_ZERO.convert("20s", None, None) == 20.0
    with pytest.raises(click.BadParameter, match="not a duration"):
        DURATION_OR_ZERO.convert("-1s", None, None)


@given(st.floats(1e-3, 1e5), st.sampled_from([("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("", 1.0)]))
def test_duration_scales_by_its_unit(x, unit) -> None:
    u, factor = unit
    assert parse_duration(f"{x!r}{u}") == pytest.approx(x * factor)


def test_compound_durations_add_their_parts() -> None:
    # `validate --segment 9h,2h30m` is the help's own example: it failed until stop 27
    assert parse_duration("2h30m") == 9000.0 and parse_duration("1m30s") == 90.0
    assert parse_duration("2h 30m") == 9000.0 and parse_duration("1min 500ms") == 60.5
    for bad in ("2h30", "1 30", "30m2", "2hx", ""):
        assert parse_duration(bad) is None, bad
    assert parse_duration("1s500ms", ("s", "ms")) == 1.5
    assert parse_duration("1m30s", ("s", "ms")) is None  # every part's unit must be allowed


def test_segment_takes_compound_offsets() -> None:
    from runqscale.validation.cli import _Segment

    assert _Segment().convert("9h,2h30m", None, None) == (32400.0, 9000.0)
    assert _Segment().convert("20h30m+90m", None, None) == (73800.0, 5400.0)


def test_parse_duration_limited_units() -> None:
    units = ("ns", "us", "µs", "ms", "s")
    assert parse_duration("5ms", units) == pytest.approx(5e-3)
    assert parse_duration("5m", units) is None and parse_duration("5", units) is None
    assert parse_duration(5, units) is None


# -- config files -------------------------------------------------------------------------------

@click.command()
@click.option("--config")
@click.option("--interval", type=DURATION, default="1s")
@click.option("--node-name", "node")
@click.option("--cgroups", multiple=True)
@click.option("--pods-file", type=click.Path())
@click.option("--insecure/--secure", default=False)
def cmd(**kw: object) -> None:
    click.echo(repr(sorted(kw.items())))


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_config_formats_sections_and_key_spellings(tmp_path) -> None:
    want = {"interval": "2s", "node": "n1", "cgroups": ["/a"], "insecure": True}
    y = _write(tmp_path, "a.yaml", "interval: 2s\nnode_name: n1\ncgroups: /a\ninsecure: true\n")
    j = _write(tmp_path, "a.json", '{"interval": "2s", "node-name": "n1", "cgroups": ["/a"], '
                                    '"insecure": true}')
    t = _write(tmp_path, "a.toml", '[scaler]\ninterval = "2s"\nnode-name = "n1"\n'
                                    'cgroups = ["/a"]\ninsecure = true\n')
    assert option_defaults(cmd, y) == want
    assert option_defaults(cmd, j) == want
    assert option_defaults(cmd, t, section="scaler") == want
    # no section table: the top level holds the keys; kind forces the parser
    c = _write(tmp_path, "scaler.conf", 'interval = "2s"\n')
    assert option_defaults(cmd, c, section="scaler", kind="TOML") == {"interval": "2s"}


@pytest.mark.parametrize("name,text,msg", [
    ("a.yaml", "intervall: 1s\n", "unknown key 'intervall'; did you mean 'interval'?"),
    ("a.yaml", "- a\n", "expected a mapping"),
    ("a.yaml", "interval: [\n", "not valid YAML/JSON"),
    ("a.toml", "= x", "not TOML"),
    ("a.toml", "scaler = 5\n", "[scaler] must be a mapping"),
    ("a.yaml", "pods_file: 5\n", "key 'pods_file' must be a string (a file path)"),
    ("a.yaml", "insecure: yes please\n", "key 'insecure' must be true or false"),
    ("a.yaml", "cgroups: [a, [b]]\n", "key 'cgroups' must be a value or a list"),
    ("a.yaml", "interval: {a: 1}\n", "key 'interval' must be a single value"),
])
def test_config_errors_name_the_file_key_and_fix(tmp_path, name, text, msg) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as e:
        option_defaults(cmd, path, section="scaler")
    assert msg in str(e.value) and str(e.value).startswith(path)
    assert "\n" not in str(e.value)


def test_config_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        option_defaults(cmd, str(tmp_path / "nope.yaml"))


def test_config_values_are_defaults_flags_win(tmp_path) -> None:
    path = _write(tmp_path, "a.yaml", "interval: 2s\nnode_name: from-file\n")

    def run(*args: str) -> str:
        r = CliRunner().invoke(cmd, list(args), default_map=option_defaults(cmd, path))
        assert r.exit_code == 0, r.output
        return r.output

    assert "('interval', 2.0)" in run() and "'from-file'" in run()
    assert "('interval', 5.0)" in run("--interval", "5s")


# -- rotating token files -----------------------------------------------------------------------

def test_token_file_follows_rotation_in_place_and_by_symlink(tmp_path) -> None:
    f = tmp_path / "token"
    f.write_text("one\n")
    tf = TokenFile(str(f))
    assert tf.token() == "one"
    f.write_text("second\n")  # rewritten (size differs)
    assert tf.token() == "second"
    # a projected volume: `token` -> ..data/token, the ..data symlink swapped atomically
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    (d1 / "token").write_text("three")
    (d2 / "token").write_text("fours")
    (tmp_path / "data").symlink_to("d1")
    (tmp_path / "proj").symlink_to("data/token")
    tp = TokenFile(str(tmp_path / "proj"))
    assert tp.token() == "three"
    os.symlink("d2", tmp_path / "data.new")
    os.replace(tmp_path / "data.new", tmp_path / "data")
    assert tp.token() == "fours"
    assert tp.seen == ["fours", "three"]


@pytest.mark.parametrize("text", ["", "  \n", "two words", "tab\there", "caf\u00e9"])
def test_token_file_rejects_without_echoing_the_token(tmp_path, text) -> None:
    f = tmp_path / "token"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        TokenFile(str(f)).token()
    assert str(f) in str(e.value) and "one token on one line" in str(e.value)
    assert not text.strip() or text.strip() not in str(e.value)


def test_token_file_missing_is_oserror(tmp_path) -> None:
    with pytest.raises(OSError):
        TokenFile(str(tmp_path / "none")).token()


# -- free ports ---------------------------------------------------------------------------------

def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
