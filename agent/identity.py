"""Cgroup path -> Kubernetes pod uid and container id, from the kubelet's path conventions alone.

Pure string parsing; no I/O. The layouts it understands (any prefix before the `kubepods` part is
allowed, as on kind or nested nodes, e.g. `/kubelet.slice/kubelet-kubepods.slice/...`):

  cgroupfs driver   /kubepods[/burstable|/besteffort]/pod<uid>/<64-hex id>
                    /kubepods/burstable/pod<uid>/crio-<id>              (CRI-O, cgroupfs)
  systemd driver    /kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_>.slice/
                        cri-containerd-<id>.scope | crio-<id>.scope | docker-<id>.scope
  CRI-O's monitor   .../crio-conmon-<id>.scope                          (pod-level, no container)

Directories below the container's own (a container that creates sub-cgroups) belong to that
container. The pod's own directory parses to the pod with no container. Anything else is not a pod
cgroup (`parse` returns None) and is labelled by its path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UID = r"([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}" \
       r"|[0-9a-fA-F]{32})"  # a UUID, or a static pod's 32-hex hash
_KUBEPODS = re.compile(r"^(?:kubelet-)?kubepods(?:\.slice)?$")
_QOS_DIR = re.compile(r"^(?:(?:kubelet-)?kubepods-)?(burstable|besteffort)(?:\.slice)?$")
_POD = re.compile(r"^(?:(?:kubelet-)?kubepods-(?:(burstable|besteffort)-)?)?pod" + _UID
                  + r"(?:\.slice)?$")
_CONTAINER = re.compile(
    r"^(?:(cri-containerd|crio|docker)-)?([0-9a-f]{64})(?:\.scope)?$")
_CONMON = re.compile(r"^crio-conmon-([0-9a-f]{64})(?:\.scope)?$")


@dataclass(frozen=True)
class CgroupIdentity:
    pod_uid: str  # normalised: lower case, dashes
    container_id: str | None  # 64 hex, None for the pod's own cgroup or CRI-O's conmon
    runtime: str | None  # "containerd", "crio", "docker", or None when the path does not say
    qos: str  # "guaranteed", "burstable", "besteffort"


_RUNTIME = {"cri-containerd": "containerd", "crio": "crio", "docker": "docker", None: None}


def parse(path: str) -> CgroupIdentity | None:
    """The pod (and container) a cgroup path belongs to, or None if it is not a pod's cgroup."""
    parts = [p for p in path.split("/") if p]
    start = next((i for i, p in enumerate(parts) if _KUBEPODS.match(p)), None)
    if start is None:
        return None
    qos = "guaranteed"
    for i in range(start + 1, len(parts)):
        seg = parts[i]
        q = _QOS_DIR.match(seg)
        if q:
            qos = q.group(1)
            continue
        m = _POD.match(seg)
        if not m:
            return None
        if m.group(1):
            qos = m.group(1)
        uid = _normalise_uid(m.group(2))
        if i + 1 == len(parts):
            return CgroupIdentity(uid, None, None, qos)
        child = parts[i + 1]
        c = _CONTAINER.match(child)
        if c:
            return CgroupIdentity(uid, c.group(2), _RUNTIME[c.group(1)], qos)
        if _CONMON.match(child):
            return CgroupIdentity(uid, None, "crio", qos)
        return CgroupIdentity(uid, None, None, qos)  # unknown child: pod-level, not guessed
    return None


def _normalise_uid(raw: str) -> str:
    return raw.replace("_", "-").lower()


def container_id_of(status_id: str) -> str:
    """`containerd://<id>`, `cri-o://<id>`, `docker://<id>` (a pod status's containerID) -> id."""
    return status_id.rsplit("://", 1)[-1].lower()
