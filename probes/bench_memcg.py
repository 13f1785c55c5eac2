"""What loading the probe charges to the loader's memory cgroup, per object revision (a
benchmark, not a test): each revision's object is loaded in a fresh process placed in its own
cgroup-v1 memory cgroup, and the cgroup's usage, its kernel part and the process's VmRSS are
read before the load and after two reads.

    python -m runqscale.probes.bench_memcg 453c0f0 WORKTREE --rounds 2

Needs root and the v1 memory controller at /sys/fs/cgroup/memory (this machine's hybrid
layout). WORKTREE is the checkout's own object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

MEMCG = "/sys/fs/cgroup/memory"
_CHILD = r"""
import json, os, sys, time
from runqscale.agent.bench import _bpf_map_rss, memory_status
from runqscale.probes import core
from runqscale.probes.model import Hierarchy
obj, cg = sys.argv[1], sys.argv[2]
def read(name):
    path = os.path.join(cg, name)
    return int(open(path).read()) if os.path.exists(path) else 0
if obj != "-":
    core.object_path = lambda: obj
def now():
    return (read("memory.usage_in_bytes"), read("memory.kmem.usage_in_bytes"),
            memory_status(os.getpid())["VmRSS"])
time.sleep(0.2)
before = now()
p = core.CoreProbe(Hierarchy.V1_CPU)
for _ in range(2):
    time.sleep(0.5)
    p.read_rows()
after = now()
print(json.dumps({"memcg_bytes": after[0] - before[0], "kmem_bytes": after[1] - before[1],
                  "vmrss_bytes": after[2] - before[2],
                  "bpf_map_rss_bytes": _bpf_map_rss(os.getpid())}))
p.close()
"""


def charge(obj: str) -> dict:
    """One load of `obj` ("-": the installed object) in a fresh memory cgroup."""
    cg = os.path.join(MEMCG, f"rqs-bench-memcg-{os.getpid()}")
    os.mkdir(cg)
    try:
        # the child joins the cgroup before it imports anything of the probe
        procs = os.path.join(cg, "cgroup.procs")
        code = f"import os; open({procs!r}, 'w').write(str(os.getpid()))\n"
        out = subprocess.run([sys.executable, "-c", code + _CHILD, obj, cg], capture_output=True,
                             text=True, timeout=120)
        if out.returncode:
            raise SystemExit(f"loading {obj} failed: {out.stderr.strip().splitlines()[-1:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        time.sleep(0.2)
        os.rmdir(cg)


def main() -> None:
    from runqscale.probes.bench_at_rev import object_at
    from runqscale.revtree import WORKTREE

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="+",
                    help=f"git revisions, or {WORKTREE} for the checkout's object")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="bench-results/probe-memcg.json")
    a = ap.parse_args()
    if not os.path.isdir(MEMCG):
        raise SystemExit(f"{MEMCG} is missing: this needs the cgroup-v1 memory controller")
    res: dict[str, list[dict]] = {r: [] for r in a.revs}
    with tempfile.TemporaryDirectory(prefix="runqscale-memcg-") as tmp:
        objs = {r: "-" if r == WORKTREE else object_at(r, tmp) for r in a.revs}
        for i in range(a.rounds):
            for r in a.revs if i % 2 == 0 else a.revs[::-1]:
                res[r].append(charge(objs[r]))
                print(f"[round {i + 1}/{a.rounds}] {r}: " + ", ".join(
                    f"{k} {v / 1e6:.2f} MB" for k, v in res[r][-1].items()), flush=True)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
