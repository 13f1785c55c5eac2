"""`python -m runqscale.agent.cli`: the `runqscale` command line (runqscale/cli.py), kept at its
old address for scripts and tests that run it this way."""

from runqscale.cli import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    run()
