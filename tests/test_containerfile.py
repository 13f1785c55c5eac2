"""The image builds from what the Containerfile copies: every package directory setup.cfg names
must be among its COPY lines, or `pip install .` in the image fails (it did: deathstarbench/
was left out when it became a package). agent/bench_install.py installs from the same set."""

from __future__ import annotations

import configparser
import os

from runqscale.agent.bench_install import containerfile_sources, containerfile_stages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _package_dirs() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    lines = cfg["options"]["package_dir"].strip().splitlines()
    return {line.split("=", 1)[1].strip().split("/")[0] for line in lines if "=" in line}


def test_the_image_build_copies_every_package_directory_and_the_metadata() -> None:
    copied = set(containerfile_sources(REPO))
    assert _package_dirs() <= copied, sorted(_package_dirs() - copied)
    assert {"setup.cfg", "pyproject.toml", "README.md"} <= copied
    assert _package_dirs() >= {"runqscale", "probes", "agent", "exporter", "scaler"}


def test_the_image_has_bytecode_at_the_optimisation_level_the_daemonset_runs_the_agent() -> None:
    """With PYTHONDONTWRITEBYTECODE set (as the image sets it), an agent run with -OO and no
    -OO bytecode compiles every module at every start, in memory: it held 1.8 MB more than
    without -OO (stop 44). So each interpreter flag of the DaemonSet's command has its compile
    step, for the venv (wheel stage) and the standard library (runtime stage)."""
    from runqscale.agent.bench_install import daemonset_command, daemonset_interpreter_flags

    cmd = daemonset_command(REPO)
    assert cmd[0] == "python3", cmd
    flags = [w for w in daemonset_interpreter_flags(REPO) if w.startswith("-O")]
    assert flags == ["-OO"], cmd  # what docs and figures describe; change them together
    text = open(os.path.join(REPO, "Containerfile")).read()
    assert "/opt/runqscale/bin/python -OO -m compileall -q /opt/runqscale" in text
    runtime = " ".join(" ".join(w) for w in containerfile_stages(REPO)[-1][1])
    assert "python3 -OO -m compileall" in runtime and "get_path(\"stdlib\")" in runtime
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime


def test_the_agent_command_runs_under_the_daemonsets_interpreter_flags() -> None:
    """`python3 -OO -m runqscale.agent --help`: the agent imports and parses with docstrings
    stripped (None must not break its help)."""
    import subprocess
    import sys

    from runqscale.agent.bench_install import daemonset_command

    cmd = daemonset_command(REPO)
    out = subprocess.run([sys.executable, *cmd[1:], "--help"], capture_output=True, text=True,
                         cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--listen" in out.stdout and "--backend" in out.stdout


def test_what_the_agent_imports_loads_under_the_daemonsets_interpreter_flags() -> None:
    """Without root (the kernel tests run the whole agent under -OO): every module the agent's
    process imports loads with docstrings stripped (numpy 2.2.0rc1 once failed to, under -OO),
    and none of them, nor parsing its flags and a config file, loads click (~1 MB of RSS)."""
    import subprocess
    import sys

    from runqscale.agent.bench_install import daemonset_interpreter_flags

    flags = daemonset_interpreter_flags(REPO)
    code = ("import json, tempfile, numpy, runqscale.agent.daemon, runqscale.agent.daemon_cmd, "
            "runqscale.exporter.server, runqscale.exporter.collector, runqscale.probes.core, "
            "runqscale.agent.pods, runqscale.http1, runqscale.agent.cgroupwatch, "
            "runqscale.agent.privdrop, runqscale.agent.malloc_tuning, "
            "runqscale.exporter.process, sys\n"
            "from runqscale.agent.options import parse_agent_args\n"
            "f = tempfile.NamedTemporaryFile('w', suffix='.json', delete=False)\n"
            "json.dump({'interval': '2s'}, f); f.close()\n"
            "o = parse_agent_args(['--config', f.name, '--window', '20s'])\n"
            "print(sys.flags.optimize, int(numpy.ones(3).sum()), o.interval, o.window, "
            "'click' in sys.modules)")
    out = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                         cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "3", "2.0", "20.0", "False"]
