"""The recommendations log: JSON Lines, one decision per line, append-only, fsync'd (design.md).

Writers append whole lines (one `write` of line + newline) and fsync after each batch, so a crash
leaves at most one torn last line. Readers accept a torn (unterminated, unparsable) last line and
skip it; a bad line anywhere else is an error naming its line number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from runqscale.scaler.model import Recommendation


class LogError(ValueError):
    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line


def append(path: str | os.PathLike[str], recs: Iterable[Recommendation]) -> int:
    """Append recommendations and fsync; returns how many were written."""
    data = b"".join(
        (json.dumps(r.to_json(), separators=(",", ":"), allow_nan=False) + "\n").encode()
        for r in recs
    )
    if not data:
        return 0
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _terminate_torn_line(fd, path)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    return data.count(b"\n")


def _terminate_torn_line(fd: int, path: str | os.PathLike[str]) -> None:
    """If a previous writer died mid-line, end that line so ours start on a fresh one."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) != b"\n":
            os.write(fd, b"\n")


@dataclass(frozen=True)
class ReadResult:
    recommendations: list[Recommendation]
    torn_last_line: bool
    skipped_torn_lines: int  # torn lines in the middle, ended by a later writer (see append)


def read(path: str | os.PathLike[str]) -> ReadResult:
    p = Path(path)
    recs: list[Recommendation] = []
    torn = False
    skipped = 0
    lines = p.read_bytes().split(b"\n")
    last_terminated = lines[-1] == b""
    if last_terminated:
        lines.pop()
    for i, raw in enumerate(lines, start=1):
        is_last = i == len(lines)
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            recs.append(Recommendation.from_json(obj))
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            if is_last and not last_terminated:
                torn = True
                continue
            if _looks_torn(raw):
                skipped += 1
                continue
            raise LogError(p, i, f"not a recommendation ({exc}); remove or fix this line") from exc
    return ReadResult(recs, torn, skipped)


def _looks_torn(raw: bytes) -> bool:
    """A torn line that a later append terminated: a cut JSON object. It does not end in '}', or
    it was cut right after a nested object's '}' and so fails only at the end of the input."""
    text = raw.decode("utf-8", "replace").rstrip()
    if not text.startswith("{"):
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return not text.endswith("}") or exc.pos >= len(text)
    return False
