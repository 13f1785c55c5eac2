"""The scaler's cluster access through the `kubernetes` package's kubeconfig loader: an exec
credential plugin (a script printing an ExecCredential) gives the token, refreshed when it
expires; `runqscale scaler k8s --kubeconfig F --context C` from outside the cluster then leads
(Lease) and scales as the scaler's ServiceAccount on the real API server. Bad options: one line."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from k8s_helpers import FreshSignals, ScalerProcess, deployment, ensure_namespace, wait_for

from runqscale.scaler.k8s import annotations as ann
from runqscale.scaler.k8s.client import path
from runqscale.scaler.k8s.kubeconfig import AccessError, ClusterAccess

PLUGIN = Path(__file__).parent / "k8s_exec_plugin.py"
NS = "kubeconfig"


def exec_kubeconfig(d: Path, server: str, ca: Path | None, token: str, ttl: float
                    ) -> tuple[Path, Path, Path]:
    """A kubeconfig with two contexts: `exec` (user authenticated by the plugin) and `other`
    (a cluster that does not exist); returns (kubeconfig, token file, plugin run counter)."""
    token_file, count = d / "plugin.token", d / "plugin.count"
    token_file.write_text(token)
    cluster = {"server": server, **({"certificate-authority": str(ca)} if ca else {})}
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "real", "cluster": cluster},
                     {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "plugin", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
            "args": [str(PLUGIN), str(token_file), str(count), str(ttl)],
            "interactiveMode": "Never"}}}],
        "contexts": [{"name": "exec", "context": {"cluster": "real", "user": "plugin"}},
                     {"name": "other", "context": {"cluster": "nowhere", "user": "plugin"}}],
    }
    kc = d / "kubeconfig"
    kc.write_text(json.dumps(cfg))
    return kc, token_file, count


def _runs(count: Path) -> int:
    return len(count.read_text().splitlines()) if count.exists() else 0


def test_exec_plugin_token_is_sent_and_refreshed_when_it_expires(tmp_path):
    kc, token_file, count = exec_kubeconfig(tmp_path, "https://127.0.0.1:6443", None, "one", 3600)
    client = ClusterAccess(str(kc), "exec").client()
    assert client.server == "https://127.0.0.1:6443"  # the named context, not current-context
    assert client._auth() == "Bearer one" and _runs(count) == 1
    token_file.write_text("two")
    assert client._auth() == "Bearer one" and _runs(count) == 1  # valid for an hour: cached
    # A credential that expires within the loader's skew is fetched again before a request.
    (tmp_path / "short").mkdir()
    kc, token_file, count = exec_kubeconfig(tmp_path / "short", "https://127.0.0.1:6443", None,
                                            "a", 1)
    client = ClusterAccess(str(kc), "exec").client()
    token_file.write_text("b")
    assert client._auth() == "Bearer b" and _runs(count) == 2


def test_oidc_auth_provider_id_token_is_sent(tmp_path):
    claims = {"iss": "https://idp.example", "sub": "dev", "exp": int(time.time()) + 3600}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    id_token = f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "oidc",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "dev", "user": {"auth-provider": {"name": "oidc", "config": {
            "client-id": "kubectl", "idp-issuer-url": "https://idp.example",
            "id-token": id_token, "refresh-token": "r"}}}}],
        "contexts": [{"name": "oidc", "context": {"cluster": "c", "user": "dev"}}]}))
    assert ClusterAccess(str(kc)).client()._auth() == f"Bearer {id_token}"


def _jwt(exp: float) -> str:
    claims = {"iss": "https://idp.example", "sub": "dev", "exp": int(exp)}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"


class FakeIdP:
    """An OIDC provider over TLS: discovery document and a token endpoint that trades refresh
    token r<n> for r<n+1> and a new id-token, first one expiring in 30 s, later ones in an hour."""

    def __init__(self, pki: Path) -> None:
        idp = self
        self.refreshes: list[str] = []
        self.tokens: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._json({"issuer": idp.url, "token_endpoint": f"{idp.url}/token"})

            def do_POST(self) -> None:  # noqa: N802
                form = urllib.parse.parse_qs(
                    self.rfile.read(int(self.headers["Content-Length"])).decode())
                old = form["refresh_token"][0]
                idp.refreshes.append(old)
                token = _jwt(time.time() + (30 if len(idp.refreshes) == 1 else 3600))
                idp.tokens.append(token)
                self._json({"access_token": "a", "token_type": "Bearer", "expires_in": 3600,
                            "id_token": token, "refresh_token": f"r{int(old[1:]) + 1}"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_oidc_id_token_is_refreshed_before_it_expires(tmp_path):
    from k8s_helpers import make_pki

    pki = tmp_path / "pki"
    make_pki(pki)  # a CA and a serving certificate for 127.0.0.1
    idp = FakeIdP(pki)
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "oidc",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "dev", "user": {"auth-provider": {"name": "oidc", "config": {
            "client-id": "kubectl", "client-secret": "s", "idp-issuer-url": idp.url,
            "idp-certificate-authority": str(pki / "ca.crt"),
            "id-token": _jwt(time.time() - 10), "refresh-token": "r1"}}}}],
        "contexts": [{"name": "oidc", "context": {"cluster": "c", "user": "dev"}}]}))
    try:
        client = ClusterAccess(str(kc)).client()  # the expired id-token is refreshed at load
        assert idp.refreshes == ["r1"]
        # that one expires in 30 s, inside the refresh skew: refreshed before it is sent
        assert client._auth() == f"Bearer {idp.tokens[1]}" and idp.refreshes == ["r1", "r2"]
        assert client._auth() == f"Bearer {idp.tokens[1]}" and len(idp.refreshes) == 2
    finally:
        idp.server.shutdown()
    # written back, as kubectl does: the next process starts from the newest refresh token
    saved = yaml.safe_load(kc.read_text())["users"][0]["user"]["auth-provider"]["config"]
    assert saved["refresh-token"] == "r3" and saved["id-token"] == idp.tokens[1]


@pytest.mark.parametrize("access, needle", [
    (dict(context="missing"), "--context"),
    (dict(server="https://127.0.0.1:6443", context="exec"), "--server connects directly"),
    (dict(token_file="/etc/hostname"), "go with --server"),
])
def test_bad_access_options_name_the_option(tmp_path, access, needle):
    kc, _, _ = exec_kubeconfig(tmp_path, "https://127.0.0.1:6443", None, "t", 3600)
    with pytest.raises(AccessError, match=needle) as e:
        ClusterAccess(**{"kubeconfig": str(kc), **access}).client()
    assert "\n" not in str(e.value)


def test_scaler_k8s_cli_bad_kubeconfig_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "kc"
    bad.write_text("just a string\n")
    sig = tmp_path / "s.jsonl"
    sig.write_text("")
    r = subprocess.run([sys.executable, "-m", "runqscale.agent.cli", "scaler", "k8s",
                        "--signals", str(sig), "--kubeconfig", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--kubeconfig" in r.stderr and "not a kubeconfig" in r.stderr


@pytest.mark.kubernetes
def test_scaler_k8s_from_outside_with_an_exec_plugin_kubeconfig(k8s_deployed, tmp_path):
    cp = k8s_deployed.cp
    ensure_namespace(cp, NS)
    cp.admin.create(path("Deployment", NS), deployment("viaexec", annotations={
        ann.POLICY: "static", ann.MIN_REPLICAS: "2"}))
    # the scaler ServiceAccount's token, handed out by the plugin: short-lived, so refreshed
    kc, _, count = exec_kubeconfig(tmp_path, cp.server, cp.pki / "ca.crt", k8s_deployed.token,
                                   ttl=60)
    sig = FreshSignals(tmp_path / "s.jsonl", [f"{NS}/viaexec"])
    s = ScalerProcess(["--kubeconfig", str(kc), "--context", "exec", "--signals", str(sig.path),
                       "--apply", "--namespace", NS, "--lease-namespace", "runqscale-system",
                       "--lease-name", "kubeconfig", "--identity", "outside", "--tick=0.5",
                       "--period=0.5", "--max-signal-age=3"], tmp_path / "scaler.log")
    try:
        wait_for(s.is_leader, 30, what="the scaler to lead (a Lease, through the exec plugin)")
        wait_for(lambda: cp.admin.get(path("Deployment", NS, "viaexec"))["spec"]["replicas"] == 2,
                 30, what="the scaler to scale viaexec 1 -> 2")
        held = cp.admin.get(path("Lease", "runqscale-system", "kubeconfig"))["spec"]
    finally:
        s.stop()
        sig.stop()
    assert held["holderIdentity"] == "outside"  # leader election on a Lease, as before
    released = cp.admin.get(path("Lease", "runqscale-system", "kubeconfig"))["spec"]
    assert not released.get("holderIdentity")  # given back on SIGTERM
    (o,) = [e for _, e in s.events("outcome") if e.get("workload") == f"{NS}/viaexec"
            and e.get("applied")][:1]
    assert o["action"] == "scale_out"
    assert _runs(count) >= 2  # re-run as the 60 s token is within the refresh skew
    assert "Unauthorized" not in (tmp_path / "scaler.log").read_text()
