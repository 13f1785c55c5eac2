"""`agent.bench_at_rev` specs: REV+FLAG... gives the agent's flags; a `py:FLAGS` among them the
interpreter's (`py:` alone: none, against the DaemonSet's -OO; absent: as the DaemonSet runs it)."""

from __future__ import annotations

import pytest

from runqscale.agent.bench import Agent
from runqscale.agent.bench_at_rev import interpreter_flags, module_args, split_spec


@pytest.mark.parametrize(("spec", "rev", "agent", "py"), [
    ("WORKTREE", "WORKTREE", [], None),
    ("abc123+--gzip", "abc123", ["--gzip"], None),
    ("WORKTREE+py:", "WORKTREE", [], []),
    ("WORKTREE+py:-OO", "WORKTREE", [], ["-OO"]),
    ("WORKTREE+--gzip+py:-O,-X,importtime", "WORKTREE", ["--gzip"], ["-O", "-X", "importtime"]),
])
def test_specs_split_into_revision_agent_flags_and_interpreter_flags(
        spec: str, rev: str, agent: list[str], py: list[str] | None) -> None:
    got_rev, flags = split_spec(spec)
    assert got_rev == rev
    assert interpreter_flags(flags) == (agent, py)


def test_interpreter_flags_need_the_image_install() -> None:
    """From the development venv -OO would compile every module at start (no -OO bytecode there):
    the bench refuses rather than measure that."""
    with pytest.raises(SystemExit, match="--install image"):
        Agent(interpreter_flags=["-OO"])


@pytest.mark.parametrize(("spec", "module", "agent"), [
    ("WORKTREE", None, []),
    ("WORKTREE+mod:runqscale.cli,agent", ["runqscale.cli", "agent"], []),
    ("WORKTREE+--gzip+mod:runqscale.agent", ["runqscale.agent"], ["--gzip"]),
])
def test_a_mod_spec_names_what_follows_the_interpreters_dash_m(
        spec: str, module: list[str] | None, agent: list[str]) -> None:
    _, flags = split_spec(spec)
    assert module_args(flags) == module
    assert interpreter_flags(flags) == (agent, None)  # neither an agent nor an interpreter flag


@pytest.mark.parametrize("spec", ["WORKTREE+mod:", "WORKTREE+mod:a+mod:b"])
def test_a_bad_mod_spec_is_refused(spec: str) -> None:
    with pytest.raises(SystemExit, match="mod:MODULE"):
        module_args(split_spec(spec)[1])
