"""Choosing a probe backend: `core` (CO-RE + libbpf, the default) or `bcc` (compiles at start)."""

from __future__ import annotations

from typing import Protocol

from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.errors import ProbeError
from runqscale.probes.model import Hierarchy, ProbeReading
from runqscale.probes.privileges import check_privileges

BACKENDS = ("core", "bcc", "auto")
HIERARCHIES = ("auto", "v1", "v2")


class Probe(Protocol):
    backend: str
    hierarchy: Hierarchy

    def read(self) -> ProbeReading: ...

    def forget(self, cgroup_ids: list[int]) -> None: ...

    def close(self) -> None: ...


def open_probe(backend: str = "auto", hierarchy: str = "auto", max_cgroups: int = 8192,
               mounts: CgroupMounts | None = None, bpf_stats: bool = True
               ) -> tuple[Probe, CgroupMounts, str]:
    """Load and attach a probe; returns it with the cgroup mounts and the measured root."""
    if backend not in BACKENDS:
        raise ProbeError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    check_privileges()  # shared by both backends: fail once, with the real reason
    mounts = mounts or CgroupMounts.read()
    hier, root = mounts.choose(hierarchy)
    if backend in ("core", "auto"):
        from runqscale.probes.core import CoreProbe

        try:
            return CoreProbe(hier, max_cgroups, bpf_stats=bpf_stats), mounts, root
        except ProbeError as core_error:
            if backend == "core":
                raise
            try:
                from runqscale.probes.bcc import BccProbe

                return BccProbe(hier, root, max_cgroups, bpf_stats=bpf_stats), mounts, root
            except (ProbeError, ImportError) as bcc_error:
                raise ProbeError(f"{core_error} (bcc fallback: {bcc_error})") from bcc_error
    from runqscale.probes.bcc import BccProbe

    return BccProbe(hier, root, max_cgroups, bpf_stats=bpf_stats), mounts, root
