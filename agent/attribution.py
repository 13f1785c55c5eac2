"""A cgroup path -> the labels its series carry: (namespace, pod, container).

- not a pod's cgroup (outside Kubernetes, system slices): ("", "", <cgroup path>);
- a pod the pod table knows: (namespace, pod name, container name); the pod's own cgroup, CRI-O's
  conmon and a container id the pod's status does not list (yet) get container "";
- a pod the table does not know: ("", "", <cgroup path>), counted once per cgroup as an unknown
  pod when it is still unknown `grace` seconds after the cgroup was first seen (a new pod's
  cgroup can appear before a poll of the kubelet catches up). Never guessed from names.

Resolved labels are kept for the cgroup's life; unresolved ones are retried whenever the pod
table changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from runqscale.agent.identity import parse
from runqscale.agent.pods import PodSource


@dataclass(frozen=True)
class Labels:
    namespace: str
    pod: str
    container: str


@dataclass
class _Entry:
    labels: Labels
    final: bool
    table_version: int
    first_seen: float
    uid: str | None
    counted: bool = False


class Attributor:
    def __init__(self, pods: PodSource, grace: float = 5.0) -> None:
        self.pods, self.grace = pods, grace
        self._cache: dict[int, _Entry] = {}
        self.unknown_pods = 0  # cgroups that look like pods whose uid is unknown (cumulative)

    def labels(self, cgroup_id: int, path: str, now: float) -> Labels:
        table = self.pods.table()
        e = self._cache.get(cgroup_id)
        if e is None or (not e.final and e.table_version != table.version):
            labels, final, uid = self._resolve(path)
            e = _Entry(labels, final, table.version, e.first_seen if e else now, uid,
                       e.counted if e else False)
            self._cache[cgroup_id] = e
        if (not e.final and not e.counted and not e.labels.pod and e.uid is not None
                and now - e.first_seen >= self.grace):
            e.counted = True
            self.unknown_pods += 1
        return e.labels

    def settled(self, cgroup_id: int) -> bool:
        """Whether this cgroup's labels are final: labels() would keep returning the same
        object whatever the pod table does, so a caller may skip asking every interval."""
        e = self._cache.get(cgroup_id)
        return e is not None and e.final

    def _resolve(self, path: str) -> tuple[Labels, bool, str | None]:
        ident = parse(path)
        if ident is None:
            return Labels("", "", path), True, None
        pod = self.pods.table().pods.get(ident.pod_uid)
        if pod is None:
            self.pods.wanted(ident.pod_uid)
            return Labels("", "", path), False, ident.pod_uid
        if ident.container_id is None:
            return Labels(pod.namespace, pod.name, ""), True, ident.pod_uid
        name = pod.containers.get(ident.container_id)
        if name is None:
            self.pods.wanted(ident.pod_uid)
            return Labels(pod.namespace, pod.name, ""), False, ident.pod_uid
        return Labels(pod.namespace, pod.name, name), True, ident.pod_uid

    def forget(self, cgroup_id: int) -> None:
        self._cache.pop(cgroup_id, None)
