"""The agent installed the way the image installs it, for the benchmarks to measure.

The development venv `make deps` builds is not what runs on a node: it sees Debian's
dist-packages (`--system-site-packages`, for BCC), whose `.pth` files run at every interpreter
start; it holds runqscale as an editable install, whose import hook loads at start too; and
without bytecode caches every start compiles the sources. On this machine that cost the agent
~1.5 MB of RSS that a node never pays (docs/bench/HISTORY.md, stop 43). The Containerfile
makes a plain venv with Debian's python3, `pip install .` into it, and compiles it; this does
the same in a cache directory: the dependencies once per setup.cfg, the package from the
working tree on every call (a few seconds), so the bench runs the code as it is now.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "runqscale")
PYTHON = "/usr/bin/python3"  # the image's interpreter: Debian's python3


def repo_root() -> str:
    """The source tree this package was installed from (editable installs and checkouts)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(here, "setup.cfg")):
        raise SystemExit(f"runqscale bench: error: {here} is not a source tree (no setup.cfg); "
                         "run the bench from a checkout, or pass --install here")
    return here


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"runqscale bench: error: {' '.join(args[:4])} ... failed: "
                         + " | ".join(tail))


def image_install(repo: str | None = None) -> str:
    """The bin directory of a venv holding the package as the image installs it."""
    repo = repo or repo_root()
    with open(os.path.join(repo, "setup.cfg"), "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:12]
    venv = os.path.join(CACHE, f"agent-bench-venv-{key}")
    bin_dir = os.path.join(venv, "bin")
    if not os.path.exists(os.path.join(bin_dir, ".deps-installed")):
        print(f"bench: building the image's install in {venv} (once per setup.cfg)",
              file=sys.stderr, flush=True)
        _run([PYTHON, "-m", "venv", "--clear", venv])
        _run([os.path.join(bin_dir, "pip"), "install", "-q", "--no-cache-dir", repo])
        open(os.path.join(bin_dir, ".deps-installed"), "w").close()
    else:
        _run([os.path.join(bin_dir, "pip"), "install", "-q", "--no-cache-dir", "--no-deps",
              "--force-reinstall", repo])
    _run([os.path.join(bin_dir, "python"), "-m", "compileall", "-q", venv])
    return bin_dir
