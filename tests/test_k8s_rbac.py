"""`kubectl auth can-i` as the scaler's and the agent's ServiceAccounts (TokenRequest tokens),
against the RBAC of deploy/ applied to the real API server: allowed exactly the verbs each uses,
denied the rest."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kubernetes

NS = "team-a"  # any workload namespace: the scaler's rights there come from its ClusterRole

# (verb, resource, subresource, namespace): what the scaler's code calls.
SCALER_ALLOWED = [
    ("get", "deployments.apps", "scale", NS),
    ("update", "deployments.apps", "scale", NS),
    ("get", "statefulsets.apps", "scale", NS),
    ("update", "statefulsets.apps", "scale", NS),
    ("get", "deployments.apps", "", NS),
    ("list", "deployments.apps", "", NS),
    ("patch", "deployments.apps", "", NS),
    ("get", "statefulsets.apps", "", NS),
    ("list", "statefulsets.apps", "", NS),
    ("patch", "statefulsets.apps", "", NS),
    ("list", "deployments.apps", "", ""),  # all namespaces (the controller's list)
    ("get", "pods", "", NS),
    ("list", "pods", "", NS),
    ("patch", "pods", "resize", NS),
    ("create", "events", "", NS),
    ("patch", "events", "", NS),
    ("get", "leases.coordination.k8s.io", "", "runqscale-system"),
    ("create", "leases.coordination.k8s.io", "", "runqscale-system"),
    ("update", "leases.coordination.k8s.io", "", "runqscale-system"),
]

SCALER_DENIED = [
    ("delete", "pods", "", NS),
    ("create", "pods", "", NS),
    ("patch", "pods", "", NS),          # only the resize subresource
    ("update", "pods", "resize", NS),
    ("get", "secrets", "", NS),
    ("list", "secrets", "", ""),
    ("get", "configmaps", "", NS),
    ("watch", "pods", "", NS),          # the loop re-lists; no watch is granted
    ("watch", "deployments.apps", "", NS),
    ("patch", "deployments.apps", "scale", NS),   # scale is GET + PUT
    ("update", "deployments.apps", "", NS),
    ("delete", "deployments.apps", "", NS),
    ("create", "deployments.apps", "", NS),
    ("patch", "daemonsets.apps", "", NS),
    ("update", "replicasets.apps", "scale", NS),
    ("delete", "events", "", NS),
    ("list", "events", "", NS),
    ("get", "leases.coordination.k8s.io", "", NS),    # its Lease lives in its own namespace
    ("update", "leases.coordination.k8s.io", "", "kube-system"),
    ("delete", "leases.coordination.k8s.io", "", "runqscale-system"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", ""),
    ("patch", "nodes", "", ""),
    ("create", "serviceaccounts", "token", "runqscale-system"),
]

AGENT_ALLOWED = [("list", "pods", "", ""), ("watch", "pods", "", "")]
AGENT_DENIED = [("get", "secrets", "", "runqscale-system"), ("patch", "pods", "", NS),
                ("delete", "pods", "", NS), ("list", "nodes", "", ""),
                ("get", "deployments.apps", "scale", NS)]


def can_i(cp, kubeconfig, verb, resource, sub, ns) -> bool:
    args = ["auth", "can-i", verb, resource]
    if sub:
        args.append(f"--subresource={sub}")
    args += ["-n", ns] if ns else ["--all-namespaces"]
    r = cp.kubectl(*args, kubeconfig_path=kubeconfig, check=False)
    answer = r.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {args}: {r.stdout} {r.stderr}"
    return answer == "yes"


def _matrix(cp, kubeconfig, allowed, denied):
    wrong = []
    for row in allowed:
        if not can_i(cp, kubeconfig, *row):
            wrong.append(f"denied but used: {row}")
    for row in denied:
        if can_i(cp, kubeconfig, *row):
            wrong.append(f"allowed but unused: {row}")
    return wrong


def test_scaler_service_account_has_exactly_the_verbs_it_uses(k8s_deployed):
    d = k8s_deployed
    assert _matrix(d.cp, d.kubeconfig, SCALER_ALLOWED, SCALER_DENIED) == []


def test_scaler_can_i_list_is_exactly_the_clusterrole(k8s_deployed):
    """`kubectl auth can-i --list` in a workload namespace: nothing beyond the ClusterRole (and
    the self-review rights every authenticated user has)."""
    d = k8s_deployed
    out = d.cp.kubectl("auth", "can-i", "--list", "-n", NS, kubeconfig_path=d.kubeconfig).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if parts:
            rows[parts[0]] = line
    expected = {
        "deployments.apps/scale": "[get update]", "statefulsets.apps/scale": "[get update]",
        "deployments.apps": "[get list patch]", "statefulsets.apps": "[get list patch]",
        "pods": "[get list]", "pods/resize": "[patch]", "events": "[create patch]",
    }
    for res, verbs in expected.items():
        assert res in rows and rows[res].rstrip().endswith(verbs), (res, rows.get(res))
    generic = {"selfsubjectreviews.authentication.k8s.io", "selfsubjectaccessreviews."
               "authorization.k8s.io", "selfsubjectrulesreviews.authorization.k8s.io"}
    extra = set(rows) - set(expected) - generic
    # non-resource URLs every authenticated user may GET (/api, /healthz, ...) start with '['
    assert {r for r in extra if not r.startswith("[")} == set(), extra


def test_agent_service_account(k8s_deployed):
    d = k8s_deployed
    token = d.cp.service_account_token("runqscale-system", "runqscale-agent")
    kc = d.cp.token_kubeconfig(token, "agent")
    assert _matrix(d.cp, kc, AGENT_ALLOWED, AGENT_DENIED) == []
