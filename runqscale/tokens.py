"""A bearer token kept in a file that rotates in place: the kubelet's projected service-account
token, a mounted Secret. Read again whenever the file changes (inode, mtime or size: a projected
volume swaps a symlink, an edit rewrites the file), so a rotation needs no restart, and not on
every request. The agent's pod sources, its /metrics endpoint and the scaler's API client share it.
"""

from __future__ import annotations

import os
import threading

# Visible ASCII: what an HTTP header may carry. Anything else is a broken file, and urllib would
# put the token itself in its error message; the error below says why, never what.
_HEADER_SAFE = frozenset(map(chr, range(0x21, 0x7F)))
KEEP = 4  # tokens remembered for redaction: a rotated one can still be in flight


class TokenFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: list[str] = []  # newest first: redacted from every log line
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""
        self._lock = threading.Lock()

    def token(self) -> str:
        """The current token. OSError if the file cannot be read; ValueError (naming the file,
        not the token) if it is empty or holds more than one header-safe word."""
        st = os.stat(self.path)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                with open(self.path, "rb") as f:
                    tok = f.read().decode("ascii", "replace").strip()
                if tok and tok not in self.seen:
                    self.seen[:] = [tok, *self.seen][:KEEP]
                if not tok or not set(tok) <= _HEADER_SAFE:
                    raise ValueError(f"bearer token file {self.path} is empty or holds "
                                     "whitespace or control characters; put one token on one "
                                     "line")
                self._token, self._stamp = tok, stamp
            return self._token
