"""The image builds from what the Containerfile copies: every package directory setup.cfg names
must be among its COPY lines, or `pip install .` in the image fails (it did: deathstarbench/
was left out when it became a package). agent/bench_install.py installs from the same set."""

from __future__ import annotations

import configparser
import os

from runqscale.agent.bench_install import containerfile_sources

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
