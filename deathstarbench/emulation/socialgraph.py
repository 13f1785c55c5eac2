"""The social network's follow graph, from an edge list such as socfb-Reed98.edges.

The file is the Network Data Repository's format: one friendship `a b` per line (whitespace
separated, `,` also accepted), `%` or `#` comment lines, ids from 0. Friendships are undirected;
DeathStarBench's scripts/init_social_graph.py registers users 0..n-1 (`username_<id>`) and
turns each edge into two follows (a follows b, b follows a), so a user's followers are its
friends here. It reads n from the first line of the `.nodes` file, which is empty in the
source: n is the largest id + 1 unless `users` is given. Self-loops are dropped and repeated edges
counted once; both are reported (`self_loops`, `duplicates`), not errors.

    g = load_edges("data/deathstarbench/socfb-Reed98.edges")
    g.users, g.friendships            # 962, 18812
    g.followers(0)                    # sorted tuple of user ids

A bad file raises SocialGraphError, one line naming `file:line` and the fix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np


class SocialGraphError(ValueError):
    """A bad edge-list file: the message names the file and line."""


@dataclass(frozen=True)
class SocialGraph:
    path: str
    users: int
    friendships: int  # undirected, distinct, no self-loops
    neighbours: tuple[tuple[int, ...], ...]  # sorted friends of each user id
    self_loops: int = 0
    duplicates: int = 0

    def followers(self, user: int) -> tuple[int, ...]:
        if not 0 <= user < self.users:
            raise IndexError(f"user {user} outside 0..{self.users - 1}")
        return self.neighbours[user]

    followees = followers  # follows are symmetric (two per friendship)

    @property
    def follows(self) -> int:
        """Follow relations DeathStarBench registers: two per friendship."""
        return 2 * self.friendships

    def degrees(self) -> np.ndarray:
        return np.fromiter((len(n) for n in self.neighbours), dtype=np.int64, count=self.users)

    @property
    def mean_followers(self) -> float:
        return self.follows / self.users if self.users else 0.0

    def isolated(self) -> list[int]:
        """Users without any friend (still registered, as DeathStarBench registers every id)."""
        return [u for u, n in enumerate(self.neighbours) if not n]


_SPLIT = re.compile(r"[\s,]+")


def load_edges(path: str | os.PathLike[str], users: int | None = None) -> SocialGraph:
    """Parse an edge list; `users` fixes the user count (ids must be below it), otherwise it is
    the largest id + 1."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise SocialGraphError(f"{path}: no such edge-list file; pass e.g. "
                               "data/deathstarbench/socfb-Reed98.edges") from None
    except UnicodeDecodeError as e:
        raise SocialGraphError(f"{path}: not a text file ({e.reason}); pass an `a b` edge list"
                               ) from None
    except OSError as e:
        raise SocialGraphError(f"{path}: cannot read ({e.strerror})") from None
    if users is not None and users < 1:
        raise SocialGraphError(f"{path}: users={users}; pass a positive user count or None")

    pairs: set[tuple[int, int]] = set()
    loops = dups = 0
    top = -1
    for no, raw in enumerate(lines, start=1):
        ln = raw.strip()
        if not ln or ln[0] in "%#":
            continue
        toks = [t for t in _SPLIT.split(ln) if t]
        # a third column (a weight or timestamp in other Network Repository files) is ignored
        if len(toks) < 2 or not toks[0].isdigit() or not toks[1].isdigit():
            raise SocialGraphError(f"{path}:{no}: {raw.strip()[:40]!r} is not `a b` with two "
                                   "non-negative integer user ids; fix or remove the line")
        a, b = int(toks[0]), int(toks[1])
        if users is not None and max(a, b) >= users:
            raise SocialGraphError(f"{path}:{no}: user id {max(a, b)} is not below users="
                                   f"{users}; pass a larger users= or fix the line")
        top = max(top, a, b)
        if a == b:
            loops += 1
            continue
        key = (a, b) if a < b else (b, a)
        if key in pairs:
            dups += 1
            continue
        pairs.add(key)
    if top < 0:
        raise SocialGraphError(f"{path}:1: no edges; write one `a b` friendship per line")
    n = users if users is not None else top + 1
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for a, b in pairs:
        nbrs[a].append(b)
        nbrs[b].append(a)
    return SocialGraph(path, n, len(pairs), tuple(tuple(sorted(x)) for x in nbrs), loops, dups)
