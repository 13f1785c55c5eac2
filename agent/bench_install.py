"""The agent installed the way the image installs it, for the benchmarks to measure.

The development venv `make deps` builds is not what runs on a node: it sees Debian's
dist-packages (`--system-site-packages`, for BCC), whose `.pth` files run at every interpreter
start; it holds runqscale as an editable install, whose import hook loads at start too; and
without bytecode caches every start compiles the sources. On this machine that cost the agent
~1.5 MB of RSS that a node never pays (docs/bench/HISTORY.md, stop 43). The Containerfile
makes a plain venv with Debian's python3, `pip install .` into it from a copy of the source
directories it names, and compiles it; this does the same in a cache directory: the
dependencies once per setup.cfg, pyproject.toml and Python, the package from a fresh copy of
the working tree on every call (a few seconds; never built inside the checkout, whose build/
could carry modules since deleted), so the bench runs the code as it is now.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "runqscale")
PYTHON = "/usr/bin/python3"  # the image's interpreter: Debian's python3
# the image's runtime environment (Containerfile ENV)
RUNTIME_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


def repo_root() -> str:
    """The source tree this package was installed from (editable installs and checkouts)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(here, "setup.cfg")):
        raise SystemExit(f"runqscale bench: error: {here} is not a source tree (no setup.cfg); "
                         "run the bench from a checkout, or pass --install here")
    return here


def containerfile_sources(repo: str) -> list[str]:
    """What the Containerfile's wheel stage copies from the build context (its COPY lines
    without --from): the bench installs from the same set, so it fails where the image build
    would (a package directory left out)."""
    out: list[str] = []
    stage = None
    with open(os.path.join(repo, "Containerfile")) as f:
        for line in f:
            words = line.split()
            if words[:1] == ["FROM"]:
                stage = words[-1] if "AS" in (w.upper() for w in words) else None
            elif stage == "wheel" and words[:1] == ["COPY"] and \
                    not any(w.startswith("--from") for w in words):
                out += words[1:-1]
    return out


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"runqscale bench: error: {' '.join(args[:4])} ... failed: "
                         + " | ".join(tail))


def image_install(repo: str | None = None) -> str:
    """The bin directory of a venv holding the package as the image installs it."""
    repo = repo or repo_root()
    h = hashlib.sha256(os.path.realpath(PYTHON).encode())
    for name in ("setup.cfg", "pyproject.toml"):
        with open(os.path.join(repo, name), "rb") as f:
            h.update(f.read())
    venv = os.path.join(CACHE, f"agent-bench-venv-{h.hexdigest()[:12]}")
    bin_dir = os.path.join(venv, "bin")
    fresh = not os.path.exists(os.path.join(bin_dir, ".deps-installed"))
    if fresh:
        print(f"bench: building the image's install in {venv} (once per setup.cfg)",
              file=sys.stderr, flush=True)
        _run([PYTHON, "-m", "venv", "--clear", venv])
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.mkdir(src)
        # the BPF object comes from the image's own build stage there; from the checkout here
        for name in [*containerfile_sources(repo), "probes/runqlat.bpf.o"]:
            path = os.path.join(repo, name)
            dest = os.path.join(src, name)
            if os.path.isdir(path):
                shutil.copytree(path, dest, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy(path, dest)
        pip = [os.path.join(bin_dir, "pip"), "install", "-q", "--no-cache-dir"]
        _run([*pip, src] if fresh else [*pip, "--no-deps", "--force-reinstall", src])
    if fresh:
        open(os.path.join(bin_dir, ".deps-installed"), "w").close()
    _run([os.path.join(bin_dir, "python"), "-m", "compileall", "-q", venv])
    return bin_dir
