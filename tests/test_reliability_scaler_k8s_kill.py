"""kill -9 of the in-cluster controller mid-run (issue 10), against the real API server.

`python -m runqscale.scaler.k8s --apply` runs with its stdout appended to a file, as a container
runtime keeps a pod's log, while the test raises the `min-replicas` annotation of a few static
workloads step by step; the controller is SIGKILLed at random moments and restarted at once with
the same identity (it renews its own Lease). Afterwards:

- every line of its log parses (a kill lands between whole-line writes);
- no applied action is repeated: per workload the applied outcomes form one chain 1 -> 2 -> ... ->
  6 with no transition twice, and the Deployment's `metadata.generation` (bumped by each spec or
  annotation change; the test makes TOP - 1 annotation changes) shows at most one scale write
  per size step, so no write happened twice, logged or not; and every write has its `applying`
  line, printed before the write (a kill between the write and its outcome line loses that
  line: `applied_but_unlogged`, explained by the intent);
- every workload ends at its final size.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from k8s_helpers import REPO, FreshSignals, deployment, ensure_namespace, wait_for

from runqscale.scaler.k8s import annotations as ann
from runqscale.scaler.k8s.client import path

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]

NS = "ctl-kill"
NAMES = [f"w{i}" for i in range(4)]
TOP = 6
KILLS = int(os.environ.get("RUNQSCALE_CTL_KILLS", "6"))


def _args(env, sig_path) -> list[str]:
    cp = env.cp
    return [sys.executable, "-m", "runqscale.scaler.k8s", "--signals", str(sig_path), "--apply",
            "--server", cp.server, "--token-file", str(env.token_file),
            "--ca-file", str(cp.pki / "ca.crt"), "--namespace", NS,
            "--lease-namespace", "runqscale-system", "--lease-name", "kill9",
            "--identity", "scaler-k", "--lease-duration=4", "--renew-deadline=3",
            "--retry-period=0.5", "--tick=0.3", "--period=0.3", "--max-signal-age=3"]


def _lines(p) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines()]  # raises on a torn line


def test_controller_kill9_log_parses_and_no_applied_action_repeats(k8s_deployed, tmp_path):
    env = k8s_deployed
    cp = env.cp
    ensure_namespace(cp, NS)
    for n in NAMES:
        cp.admin.create(path("Deployment", NS), deployment(n, annotations={
            ann.POLICY: "static", ann.MIN_REPLICAS: "1"}))
    sig = FreshSignals(tmp_path / "s.jsonl", [f"{NS}/{n}" for n in NAMES], every=0.3)
    out = tmp_path / "controller.log"
    rng = random.Random(int(os.environ.get("RUNQSCALE_KILL_SEED", "1")))
    bumps = [(n, k) for k in range(2, TOP + 1) for n in NAMES]  # each workload 2, 3, ... TOP
    recovery: list[float] = []
    kills = 0
    proc = None

    def start() -> subprocess.Popen:
        with out.open("ab") as f:  # the child keeps its own descriptor
            return subprocess.Popen(_args(env, sig.path), stdout=f, stderr=subprocess.DEVNULL,
                                    cwd=REPO)

    def outcomes() -> int:
        return sum(1 for e in _lines(out) if e["event"] == "outcome")

    try:
        proc = start()
        for i, (name, k) in enumerate(bumps):
            cp.admin.patch(path("Deployment", NS, name),
                           {"metadata": {"annotations": {ann.MIN_REPLICAS: str(k)}}})
            time.sleep(rng.uniform(0.05, 0.4))
            if kills < KILLS and i % (len(bumps) // KILLS) == len(bumps) // KILLS - 1:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                kills += 1
                _lines(out)  # parses after every kill
                seen, t0 = outcomes(), time.monotonic()
                proc = start()
                wait_for(lambda s=seen: outcomes() > s, 30, 0.05, what="an outcome after restart")
                recovery.append(time.monotonic() - t0)
        wait_for(lambda: all(cp.admin.get(path("Deployment", NS, n))["spec"]["replicas"] == TOP
                             for n in NAMES), 60, what=f"every workload at {TOP}")
        time.sleep(1.0)  # a few more steps: nothing more may be applied
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        sig.stop()
    lines = _lines(out)
    applied = {n: [tuple(e["replicas"]) for e in lines if e["event"] == "outcome"
                   and e["workload"] == f"{NS}/{n}" and e["applied"]] for n in NAMES}
    # Deployments bump generation on annotation changes too: TOP - 1 of them per workload
    writes = {n: cp.admin.get(path("Deployment", NS, n))["metadata"]["generation"] - 1 - (TOP - 1)
              for n in NAMES}
    intents = {n: [tuple(e["replicas"]) for e in lines if e["event"] == "outcome"
                   and e["workload"] == f"{NS}/{n}" and e["status"] == "applying"] for n in NAMES}
    repeated = sum(len(a) - len(set(a)) for a in applied.values())
    unlogged = sum(writes[n] - len(applied[n]) for n in NAMES)
    print(f"\ncontroller kill-9 figures: kills={kills} log_lines={len(lines)} torn_lines=0 "
          f"applied_logged={sum(map(len, applied.values()))} repeated={repeated} "
          f"scale_writes_by_generation={sum(writes.values())} "
          f"applied_but_unlogged={unlogged} (each with its applying line) "
          f"intents={sum(map(len, intents.values()))} restart_to_first_outcome_s "
          f"min={min(recovery):.2f} median={sorted(recovery)[len(recovery) // 2]:.2f} "
          f"max={max(recovery):.2f}")
    assert kills == KILLS
    assert repeated == 0
    for n in NAMES:
        chain = applied[n]
        assert all(a < b for a, b in chain), chain  # only ever upwards
        assert all(x[1] <= y[0] for x, y in zip(chain, chain[1:], strict=False)), chain
        # at most one scale write per size step (1 -> TOP: TOP - 1), none repeated
        assert len(chain) <= writes[n] <= TOP - 1, (n, writes[n], chain)
        assert writes[n] <= len(set(intents[n])), (n, writes[n], intents[n])
