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

import functools
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


@functools.cache  # asked for at every agent the bench starts: one git call per run
def repo_root() -> str:
    """The checkout this package was installed from (an editable install)."""
    from runqscale.revtree import repo_root as git_root

    return git_root("runqscale bench (--install image; --install here needs no checkout)")


def _instructions(path: str) -> list[list[str]]:
    """The Containerfile's instructions as words (continued lines joined, comments dropped)."""
    out, pending = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            out.append((pending + line).split())
            pending = ""
    if pending:
        out.append(pending.split())
    return out


def containerfile_stages(repo: str) -> list[tuple[str | None, list[list[str]]]]:
    """The Containerfile's stages in order: each one's name (`FROM ... AS name`, else None) and
    its instructions after the FROM, as words."""
    stages: list[tuple[str | None, list[list[str]]]] = []
    for words in _instructions(os.path.join(repo, "Containerfile")):
        if words[0].upper() == "FROM":
            named = len(words) > 2 and words[-2].upper() == "AS"
            stages.append((words[-1] if named else None, []))
        elif stages:
            stages[-1][1].append(words)
    return stages


def containerfile_sources(repo: str) -> list[str]:
    """What the Containerfile's `wheel` stage copies from the build context (its COPY lines
    without --from; other flags skipped): the bench installs from the same set, so it fails
    where the image build would (a package directory left out)."""
    out: list[str] = []
    for words in dict(containerfile_stages(repo)).get("wheel", []):
        if words[0].upper() == "COPY":
            if any(w.startswith("--from") for w in words[1:]):
                continue  # from another stage, not the build context
            args = [w for w in words[1:] if not w.startswith("--")]
            if args and args[0].startswith("["):
                raise SystemExit("runqscale bench: error: Containerfile: COPY in JSON form is "
                                 "not understood here; write `COPY SRC... DEST`")
            out += args[:-1]
    if not out:
        raise SystemExit("runqscale bench: error: Containerfile: no COPY from the build context "
                         "in a stage named `wheel`; the bench installs what that stage copies")
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
    obj = os.path.join(repo, "probes", "runqlat.bpf.o")
    for need, fix in ((PYTHON, "apt-get install python3-venv"), (obj, "make bpf")):
        if not os.path.exists(need):
            raise SystemExit(f"runqscale bench: error: {need} is missing; {fix}")
    if fresh:
        print(f"bench: building the image's install in {venv} (once per setup.cfg)",
              file=sys.stderr, flush=True)
        _run([PYTHON, "-m", "venv", "--clear", venv])
        # the build backend once, so later installs build without the network
        _run([os.path.join(bin_dir, "pip"), "install", "-q", "--no-cache-dir",
              "setuptools>=64", "wheel"])
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.mkdir(src)
        # the BPF object comes from the image's own build stage there; from the checkout here
        for name in [*containerfile_sources(repo), os.path.relpath(obj, repo)]:
            path = os.path.join(repo, name)
            dest = os.path.join(src, name)
            if os.path.isdir(path):
                shutil.copytree(path, dest, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy(path, dest)
        pip = [os.path.join(bin_dir, "pip"), "install", "-q", "--no-cache-dir",
               "--no-build-isolation"]
        _run([*pip, src] if fresh else [*pip, "--no-deps", "--force-reinstall", src])
    if fresh:
        open(os.path.join(bin_dir, ".deps-installed"), "w").close()
    python = os.path.join(bin_dir, "python")
    _run([python, "-m", "compileall", "-q", venv])
    # the -OO bytecode the DaemonSet's agent loads (daemonset_command), in the venv and, as the
    # image's runtime stage compiles it, the interpreter's standard library (already compiled
    # files are skipped: a second call takes about a second)
    stdlib = subprocess.run([PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    if not os.access(stdlib, os.W_OK):
        raise SystemExit(f"runqscale bench: error: {stdlib} is not writable; run as root to "
                         "compile its -OO bytecode as the image does")
    _run([python, "-OO", "-m", "compileall", "-q", venv, stdlib])
    return bin_dir


# how the DaemonSet's command starts the agent, after the interpreter and its flags
AGENT_MODULE = ["-m", "runqscale.agent"]


def daemonset_interpreter_flags(repo: str | None = None) -> list[str]:
    """The interpreter flags of the DaemonSet's command (`python3 [FLAGS] -m runqscale.agent`)."""
    cmd = daemonset_command(repo)
    if not cmd[0].startswith("python") or cmd[-len(AGENT_MODULE):] != AGENT_MODULE:
        raise SystemExit(f"runqscale bench: error: the DaemonSet's agent command {cmd} is not "
                         f"`python3 [FLAGS] {' '.join(AGENT_MODULE)}`; update "
                         "agent/bench_install.py with it")
    return cmd[1:-len(AGENT_MODULE)]


def daemonset_command(repo: str | None = None) -> list[str]:
    """The agent's command in deploy/base/agent-daemonset.yaml (interpreter flags included), as
    the bench runs it from the image-like venv."""
    return list(_daemonset_command(os.path.join(repo or repo_root(), "deploy", "base",
                                                "agent-daemonset.yaml")))


@functools.cache  # one read per run, not one per agent started
def _daemonset_command(path: str) -> tuple[str, ...]:
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f)
    agent = next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "agent")
    return tuple(agent["command"])
