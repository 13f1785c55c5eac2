"""Tables for people, one look everywhere (rich): a header rule, no borders, right-aligned
numbers. Machine outputs (--json, report.json) never go through here."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

WIDTH = 120  # when stdout is not a terminal (pipes, CI logs) and COLUMNS is unset


def new(columns: Sequence[str], numeric: Iterable[str] = (), title: str | None = None) -> Table:
    """A table with these headers; the `numeric` ones are right-aligned."""
    num = set(numeric)
    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              collapse_padding=True)
    for c in columns:
        t.add_column(Text(c), justify="right" if c in num else "left", no_wrap=True)
    return t


def add_row(table: Table, *cells: str | None, style: str | None = None) -> None:
    """Cells as plain text: a `[policy]` or a reason with brackets is shown, never parsed as
    rich markup."""
    table.add_row(*(Text("" if c is None else c) for c in cells), style=style)


def console(file: io.TextIOBase | None = None, width: int = WIDTH) -> Console:
    """A Console for stdout (or `file`), plain when not a terminal, `width` wide there unless
    COLUMNS says otherwise."""
    out = Console(file=file, highlight=False, soft_wrap=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = width
    return out


def render(table: Table, width: int | None = None) -> str:
    """The table as plain text (no colour codes), for callers that return a string."""
    buf = io.StringIO()
    Console(file=buf, highlight=False, color_system=None, width=width or WIDTH,
            soft_wrap=False).print(table)
    return buf.getvalue().rstrip("\n")
