"""Metric families that render the Prometheus text format fast, without client_python.

A scrape of 500 containers is ~23 000 samples; client_python's generic encoder builds a dict and
escapes every label of every sample (~25 us each on a busy node: over half a second). A
`RowFamily` keeps one pre-escaped label string per container instead and writes its lines
directly. The agent does not import client_python at all (the package and the urllib.request
its exposition module loads cost 2.1 MB of the agent's 40 MB budget), but a family's `samples`
are still materialised on demand in client_python's shape, so its registry, encoder and parser
(the tests use them) see an ordinary family.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Sample(NamedTuple):
    """One sample, with client_python's fields."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp: float | None = None
    exemplar: object = None
    native_histogram: object = None


def escape_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_string(names: Sequence[str], values: Sequence[str]) -> str:
    return ",".join(f'{n}="{escape_value(v)}"' for n, v in zip(names, values, strict=True))


def fmt(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _fmt(v: float) -> str:
    """fmt, with finite numbers (nearly all) on the fast path: repr is the text format's."""
    return repr(v) if v - v == 0 else fmt(v)


class RowFamily:
    """One family; each row is (label values, pre-escaped label string, value or histogram).
    `name` carries no `_total`: a counter's samples get it, as in client_python."""

    def __init__(self, name: str, documentation: str, typ: str, labelnames: Sequence[str],
                 le: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.type, self.unit = name, documentation, typ, ""
        self.labelnames = list(labelnames)
        self.le = list(le)
        self.rows: list[tuple[Sequence[str], str, object]] = []

    @property
    def samples(self) -> list[Sample]:
        out = []
        for values, _, payload in self.rows:
            labels = dict(zip(self.labelnames, values, strict=True))
            if self.type == "histogram":
                cum, total = payload  # type: ignore[misc]
                cum = _ints(cum)
                for le, c in zip(self.le, cum, strict=True):
                    out.append(Sample(self.name + "_bucket", {**labels, "le": le}, c))
                out.append(Sample(self.name + "_count", labels, cum[-1]))
                out.append(Sample(self.name + "_sum", labels, total))
            else:
                suffix = "_total" if self.type == "counter" else ""
                out.append(Sample(self.name + suffix, labels, payload))
        return out

    @property
    def lines_per_row(self) -> int:
        """Text lines one row renders to: a histogram's buckets, _count and _sum; else 1."""
        return len(self.le) + 2 if self.type == "histogram" else 1

    def add(self, values: Sequence[str], labelstr: str, payload: object) -> None:
        self.rows.append((values, labelstr, payload))

    def render(self, out: list[str], start: int = 0, stop: int | None = None) -> None:
        """Rows [start, stop) as text, after the HELP/TYPE header when start is 0."""
        name = self.name
        head = name + "_total" if self.type == "counter" else name
        if start == 0:
            doc = self.documentation.replace("\\", "\\\\").replace("\n", "\\n")
            out.append(f"# HELP {head} {doc}\n# TYPE {head} {self.type}\n")
        rows = self.rows[start:stop]
        if self.type == "histogram":
            le_tail = [f'le="{le}"}} ' for le in self.le]
            for _, lbl, payload in rows:
                cum, total = payload  # type: ignore[misc]
                cum = _ints(cum)
                pre = f"{name}_bucket{{{lbl},"
                out.append("".join([f"{pre}{t}{c}\n" for t, c in zip(le_tail, cum, strict=True)]))
                out.append(f"{name}_count{{{lbl}}} {cum[-1]}\n{name}_sum{{{lbl}}} {fmt(total)}\n")
        else:
            out.append("".join([f"{head}{{{lbl}}} {_fmt(v)}\n" if lbl  # type: ignore[arg-type]
                                else f"{head} {_fmt(v)}\n" for _, lbl, v in rows]))


def _ints(counts: Iterable[int]) -> list[int]:
    """A histogram row's cumulative counts as Python ints: the collector passes a row of a
    numpy matrix (its `tolist`), so the ints exist only while their row is rendered."""
    tolist = getattr(counts, "tolist", None)
    return tolist() if tolist is not None else list(counts)


def single(name: str, documentation: str, typ: str, value: float) -> RowFamily:
    """An unlabelled counter or gauge."""
    fam = RowFamily(name, documentation, typ, ())
    fam.add((), "", float(value))  # client_python writes every value as a float
    return fam


def iter_chunks(families: Iterable[RowFamily], lines_per_chunk: int = 400) -> Iterator[bytes]:
    """Text format 0.0.4 for these families, a piece at a time: a large family is rendered
    about `lines_per_chunk` lines (~100 KB) per piece, so a scrape of hundreds of containers
    never holds its whole body (megabytes) in memory. Counted in lines, not rows: a histogram
    row is 38 lines, and 100 of them made 0.8 MB pieces, each held three times over (joined,
    encoded, framed) — a 5 MB peak per scrape that glibc kept as heap. A family is let go of
    before the next is asked for, so a collector that builds its families lazily holds one at
    a time."""
    for fam in families:
        step = max(1, lines_per_chunk // fam.lines_per_row)
        for start in range(0, len(fam.rows), step):
            out: list[str] = []
            fam.render(out, start, start + step)
            yield "".join(out).encode()
        del fam


def render(families: Iterable[RowFamily]) -> bytes:
    return b"".join(iter_chunks(families))
