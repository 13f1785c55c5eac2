"""How every command fails: one line on stderr naming the problem and the fix, then an exit code
(2 for bad usage or input, 1 for a runtime failure), never a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn


def fail(message: str, usage: bool = False, prog: str | None = None) -> NoReturn:
    """`prog`: the command's name for the prefix; default the running click command's path.
    click is not imported here: the agent's own process parses its flags without it."""
    if prog is None:
        click = sys.modules.get("click")
        ctx = click.get_current_context(silent=True) if click is not None else None
        prog = ctx.command_path if ctx else "runqscale"
    # a user's value may carry a newline or a CR: escaped, the error stays one line
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    sys.stderr.write(f"{prog}: error: {line}\n")
    sys.stderr.flush()
    sys.exit(2 if usage else 1)
