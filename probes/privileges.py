"""Can this process load tracing BPF programs at all? Checked before any backend tries."""

from __future__ import annotations

import os

from runqscale.probes.errors import ProbeError

CAP_PERFMON, CAP_BPF = 38, 39


def effective_capabilities() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def check_privileges() -> None:
    caps = effective_capabilities()
    if not (caps >> CAP_BPF) & 1 or not (caps >> CAP_PERFMON) & 1:
        who = "not root" if os.geteuid() != 0 else "root without them"
        raise ProbeError(
            f"missing CAP_BPF/CAP_PERFMON ({who}): run with sudo or grant "
            "cap_bpf,cap_perfmon,cap_sys_resource"
        )
