"""`showar@REV`: showar's modules as of a git revision, for A/B runs against a change."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_scaler_helpers import window

from runqscale.scaler import policies
from runqscale.scaler.model import CurrentState, ScalerConfig
from runqscale.scaler.policies import showar
from runqscale.validation import policy_at_rev

CFG = ScalerConfig(min_replicas=1, max_replicas=20, max_cpu_per_replica=4.0)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A checkout with today's showar modules (rev A), then one with a 3σ margin (rev B)."""
    src = Path(showar.__file__).parent
    dst = tmp_path / policy_at_rev.SOURCE_DIR
    dst.mkdir(parents=True)
    for mod in policy_at_rev.MODULES:
        shutil.copy(src / f"{mod}.py", dst / f"{mod}.py")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    a = _git(tmp_path, "rev-parse", "HEAD")
    sizing = dst / "showar_sizing.py"
    text = sizing.read_text()
    assert "sigma_k: float = 2.0" in text
    sizing.write_text(text.replace("sigma_k: float = 2.0", "sigma_k: float = 3.0"))
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "b")
    return tmp_path, a, _git(tmp_path, "rev-parse", "HEAD")


def test_a_revision_decides_as_its_own_code_did(repo: tuple[Path, str, str]) -> None:
    root, a, b = repo
    try:
        name_a = policy_at_rev.register(a, root)
        name_b = policy_at_rev.register(b, root)
        assert (name_a, name_b) == (f"showar@{a}", f"showar@{b}")
        # one replica using 0.2-0.4 core under a 0.4-core limit: a resize up to demand + kσ,
        # where k is what the two revisions differ in
        usage = [0.2, 0.4] * 5
        w = window(n=10, replicas=1, ready_replicas=1, cpu_usage_cores=usage,
                   request_rate=100.0, throttled_ratio=0.0, cpu_limit_cores=0.4,
                   cpu_request_cores=0.4)
        current = CurrentState(1, 0.4, 0.4)
        today, _ = showar.decide(w, current, CFG, None)
        rec_a, _ = policies.get(name_a).decide(w, current, CFG, None)
        rec_b, _ = policies.get(name_b).decide(w, current, CFG, None)
        assert rec_a.recommended == today.recommended and rec_a.reason == today.reason
        assert rec_a.action == rec_b.action == "resize", (rec_a.reason, rec_b.reason)
        assert rec_b.recommended.cpu_limit_cores > rec_a.recommended.cpu_limit_cores
        assert "+3σ" in rec_b.reason and "+2σ" in rec_a.reason
    finally:
        for key in [k for k in policies.POLICIES if k.startswith("showar@")]:
            del policies.POLICIES[key]


def test_an_unknown_revision_is_a_one_line_error(repo: tuple[Path, str, str]) -> None:
    root, _, _ = repo
    with pytest.raises(policy_at_rev.RevisionError, match="no scaler/policies/showar.py"):
        policy_at_rev.register("no-such-rev", root)
    assert "showar@no-such-rev" not in policies.POLICIES
