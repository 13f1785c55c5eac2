"""Cgroup path -> pod uid / container id, for every layout the kubelet and runtimes produce."""

from __future__ import annotations

import pytest

from runqscale.agent.identity import CgroupIdentity, container_id_of, parse

UID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
UID_ = UID.replace("-", "_")
CID = "ab" * 32
STATIC = "5d3e6f1a2b3c4d5e6f7a8b9c0d1e2f3a"

CASES = [
    # cgroupfs driver (containerd / docker / CRI-O with cgroup_manager=cgroupfs)
    (f"/kubepods/burstable/pod{UID}/{CID}", CgroupIdentity(UID, CID, None, "burstable")),
    (f"/kubepods/besteffort/pod{UID}/{CID}", CgroupIdentity(UID, CID, None, "besteffort")),
    (f"/kubepods/pod{UID}/{CID}", CgroupIdentity(UID, CID, None, "guaranteed")),
    (f"/kubepods/burstable/pod{UID}/crio-{CID}", CgroupIdentity(UID, CID, "crio", "burstable")),
    (f"/kubepods/burstable/pod{UID}", CgroupIdentity(UID, None, None, "burstable")),
    # systemd driver
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope", CgroupIdentity(UID, CID, "containerd", "burstable")),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"crio-{CID}.scope", CgroupIdentity(UID, CID, "crio", "besteffort")),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope",
     CgroupIdentity(UID, CID, "docker", "guaranteed")),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"crio-conmon-{CID}.scope", CgroupIdentity(UID, None, "crio", "burstable")),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
     CgroupIdentity(UID, None, None, "burstable")),
    # a container's own sub-cgroups belong to it
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope/init.scope",
     CgroupIdentity(UID, CID, "containerd", "guaranteed")),
    # kind / nested nodes: a prefix before kubepods
    (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
     f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     CgroupIdentity(UID, CID, "containerd", "besteffort")),
    (f"/system.slice/docker-{'cd' * 32}.scope/kubepods/burstable/pod{UID}/{CID}",
     CgroupIdentity(UID, CID, None, "burstable")),
    # a test sandbox laid out like the kubelet's tree
    (f"/runqscale-test-123/kubepods/burstable/pod{UID}/{CID}",
     CgroupIdentity(UID, CID, None, "burstable")),
    # static pods: the uid is a 32-hex hash
    (f"/kubepods/burstable/pod{STATIC}/{CID}", CgroupIdentity(STATIC, CID, None, "burstable")),
    # upper-case hex in a uid is normalised
    (f"/kubepods/pod{UID.upper()}/{CID}", CgroupIdentity(UID, CID, None, "guaranteed")),
    # not pods
    ("/", None),
    ("/system.slice/containerd.service", None),
    ("/kubepods", None),
    ("/kubepods.slice/kubepods-burstable.slice", None),
    (f"/system.slice/pod{UID}/{CID}", None),  # no kubepods ancestor
    (f"/kubepods/burstable/notapod/{CID}", None),
    (f"/kubepods/burstable/pod1234/{CID}", None),  # not a uid
]


@pytest.mark.parametrize("path,want", CASES, ids=[c[0][-60:] for c in CASES])
def test_parse(path: str, want: CgroupIdentity | None) -> None:
    assert parse(path) == want


def test_unknown_child_of_pod_is_pod_level_not_guessed() -> None:
    assert parse(f"/kubepods/burstable/pod{UID}/sidecar-thing") == CgroupIdentity(
        UID, None, None, "burstable")


@pytest.mark.parametrize("raw", [f"containerd://{CID}", f"cri-o://{CID}", f"docker://{CID}",
                                 CID, f"containerd://{CID.upper()}"])
def test_container_id_of(raw: str) -> None:
    assert container_id_of(raw) == CID
