"""runqscale as it was at a git revision, laid out as the installed package (for the *_at_rev
tools that compare revisions: agent/bench_at_rev.py, scaler/decisions_at_rev.py,
scaler/bench_at_rev.py).

`checkout` makes a detached git worktree of the revision; `layout` lays a source tree out as
the package `runqscale` under a directory that goes on PYTHONPATH, with a sitecustomize that
takes the editable install's finder out, so a process started with it imports that revision's
code and nothing of the checkout's; `run_python` starts such a process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import resources

WORKTREE = "WORKTREE"  # the checkout as it is now, uncommitted changes included
SUBPACKAGES = ("probes", "agent", "exporter", "scaler", "validation", "deathstarbench")
# Imported first from PYTHONPATH: takes the editable install's finder out, so `runqscale` comes
# from the laid-out tree, in the tool and in the processes it starts.
_SITECUSTOMIZE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
for _m in [m for m in sys.modules if m == "runqscale" or m.startswith("runqscale.")]:
    del sys.modules[_m]
"""


def git_toplevel() -> str | None:
    """The git checkout this package was installed from (editable installs); None if it is
    not in one."""
    here = str(resources.files("runqscale"))
    out = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def repo_root(tool: str) -> str:
    """git_toplevel(), or the tool's one-line exit."""
    root = git_toplevel()
    if root is None:
        raise SystemExit(f"{tool}: needs a git checkout of runqscale (an editable install)")
    return root


def checkout_dir(work: str, rev: str) -> str:
    return os.path.join(work, "src-" + rev.replace("/", "_"))


def checkout(rev: str, repo: str, work: str) -> str:
    """The source tree of `rev`: a detached worktree under `work` (the checkout for WORKTREE)."""
    if rev == WORKTREE:
        return repo
    src = checkout_dir(work, rev)
    r = subprocess.run(["git", "-C", repo, "worktree", "add", "--detach", src, rev],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"revision {rev}: {r.stderr.strip()[-300:]}")
    return src


def layout(src: str, work: str, rev: str) -> str:
    """A PYTHONPATH entry under which `runqscale` is the code in `src`."""
    root = os.path.join(work, "path-" + rev.replace("/", "_"))
    pkg = os.path.join(root, "runqscale")
    os.makedirs(pkg)
    for name in os.listdir(os.path.join(src, "runqscale")):
        if name.endswith(".py"):
            shutil.copy(os.path.join(src, "runqscale", name), pkg)
    for sub in SUBPACKAGES:
        os.symlink(os.path.join(src, sub), os.path.join(pkg, sub))
    with open(os.path.join(root, "sitecustomize.py"), "w") as f:
        f.write(_SITECUSTOMIZE)
    return root


def remove_worktrees(repo: str, work: str, revs: list[str]) -> None:
    """Forget the worktrees `checkout` made (before `work` goes: git prunes only missing ones)."""
    for rev in revs:
        src = checkout_dir(work, rev)
        if rev != WORKTREE and os.path.isdir(src):
            subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", src],
                           capture_output=True)


def run_python(path: str, args: Sequence[str], failed: str, cwd: str | None = None) -> None:
    """`python ARGS` with the tree laid out at `path` (`layout`) on PYTHONPATH; if it fails,
    the one-line exit "`failed`: its last line of stderr"."""
    r = subprocess.run([sys.executable, *args], env=dict(os.environ, PYTHONPATH=path),
                       capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        err = r.stderr.strip()
        raise SystemExit(f"{failed}: {err.splitlines()[-1] if err else f'exit {r.returncode}'}")
