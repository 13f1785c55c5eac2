"""Where each service runs when this machine stands for a small cluster: each CPU is a "node".

`place(load, nodes)` is the default scheduler's picture (spread by requested CPU: each service,
heaviest first, onto the least-loaded node). `place(load, nodes, hints)` adds runqscale's affinity
recommendations as preferred (anti-)affinity: a node scores the load already there, minus a
bonus for each co-locate partner on it, plus a penalty for each spread partner on it, the
penalty worth `weight` × the mean service load (so a hint outweighs a small imbalance, not a
large one). Pure and deterministic: ties go to the lower node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runqscale.scaler.affinity import AffinityPair


def place(load: Mapping[str, float], nodes: Sequence[str],
          hints: Sequence[AffinityPair] = (), weight: float = 1.0) -> dict[str, str]:
    if not nodes:
        raise ValueError("place: no nodes")
    partners: dict[str, list[tuple[str, str]]] = {s: [] for s in load}
    for h in hints:
        a, b = h.a.name, h.b.name
        if a in partners and b in partners:
            partners[a].append((b, h.kind))
            partners[b].append((a, h.kind))
    unit = weight * (sum(load.values()) / max(1, len(load)))
    on: dict[str, float] = {n: 0.0 for n in nodes}
    out: dict[str, str] = {}
    for s in sorted(load, key=lambda k: (-load[k], k)):
        def cost(n: str, s: str = s) -> tuple[float, int]:
            c = on[n]
            for p, kind in partners[s]:
                if out.get(p) == n:
                    c += unit if kind == "spread" else -unit
            return c, list(nodes).index(n)

        best = min(nodes, key=cost)
        out[s] = best
        on[best] += load[s]
    return out


def satisfied(placement: Mapping[str, str], hints: Sequence[AffinityPair]) -> tuple[int, int]:
    """(hints the placement follows, hints that concern placed services)."""
    n = ok = 0
    for h in hints:
        a, b = placement.get(h.a.name), placement.get(h.b.name)
        if a is None or b is None:
            continue
        n += 1
        ok += (a == b) == (h.kind == "co-locate")
    return ok, n
