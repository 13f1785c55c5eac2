"""How every command fails: one line on stderr naming the problem and the fix, then an exit code
(2 for bad usage or input, 1 for a runtime failure), never a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn

import click


def fail(message: str, usage: bool = False) -> NoReturn:
    name = click.get_current_context(silent=True)
    prefix = f"{name.command_path}: " if name else "runqscale: "
    click.echo(f"{prefix}error: {message}", err=True)
    sys.exit(2 if usage else 1)
