"""The scaler reading a secured Prometheus: a real Prometheus (Debian's) serving TLS with a required
client certificate and basic auth (`--web.config.file`, bcrypt-hashed password), and a real nginx
TLS reverse proxy that requires a bearer token in front of a plain Prometheus (Prometheus itself
does not check bearer tokens; proxies such as kube-rbac-proxy and cloud gateways do). Each missing
or wrong credential is refused by the server, not by us; bad options are one line, exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_helpers import PrometheusServer, free_port, have_prometheus

from runqscale.scaler.httpconfig import HttpClientConfig, HttpConfigError
from runqscale.scaler.prometheus_source import PrometheusError, PrometheusSource

pytestmark = pytest.mark.prometheus

NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
PASSWORD = "s3cret-pass"
TOKEN = "tok-3f9a1c"


def _openssl(d: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)


def make_pki(d: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "1", "-subj", "/CN=runqscale-test-prom-ca")
    (d / "ext.cnf").write_text("[server]\nsubjectAltName=IP:127.0.0.1\n"
                               "extendedKeyUsage=serverAuth\n"
                               "[client]\nextendedKeyUsage=clientAuth\n")
    for name, ext in (("server", "server"), ("client", "client")):
        _openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN=runqscale-test-{name}")
        _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile", "ext.cnf",
                 "-extensions", ext)
    return d


def secret(d: Path, name: str, value: str) -> str:
    p = d / name
    p.write_text(value + "\n")
    return str(p)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_prometheus(pki):
    """Prometheus over TLS requiring a client certificate from the CA and basic auth."""
    if not have_prometheus():
        pytest.skip("no Prometheus binary (apt-get install prometheus)")
    bcrypt = pytest.importorskip("bcrypt")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = pki / "web.yml"
    web.write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki / 'server.crt'}\n  key_file: {pki / 'server.key'}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki / 'ca.crt'}\n"
        f"basic_auth_users:\n  scaler: '{hashed}'\n")
    srv = PrometheusServer([], web_config=str(web))
    yield srv
    srv.stop()


def _query(url: str, cfg: HttpClientConfig) -> list[dict]:
    now = time.time()
    return PrometheusSource(url, http=cfg, timeout_seconds=5).query_range(
        "vector(1)", now - 5, now, 1)


def _wait_answer(url: str, cfg: HttpClientConfig, timeout: float = 20) -> list[dict]:
    """The first answer once Prometheus is ready (it listens before its TSDB is open)."""
    end = time.monotonic() + timeout
    while True:
        try:
            return _query(url, cfg)
        except PrometheusError as e:
            if time.monotonic() > end or "HTTP 503" not in str(e):
                raise
            time.sleep(0.2)


def test_tls_client_cert_and_basic_auth(tls_prometheus, pki, tmp_path):
    url = tls_prometheus.url
    full = dict(ca_file=str(pki / "ca.crt"), cert_file=str(pki / "client.crt"),
                key_file=str(pki / "client.key"), basic_auth_username="scaler",
                basic_auth_password_file=secret(tmp_path, "pw", PASSWORD))
    (series,) = _wait_answer(url, HttpClientConfig(**full))
    assert float(series["values"][-1][1]) == 1.0
    # the server refuses each missing piece
    wrong = {**full, "basic_auth_password_file": secret(tmp_path, "bad", "nope")}
    with pytest.raises(PrometheusError, match="HTTP 401"):
        _query(url, HttpClientConfig(**wrong))
    no_auth = {k: v for k, v in full.items() if not k.startswith("basic")}
    with pytest.raises(PrometheusError, match="HTTP 401"):
        _query(url, HttpClientConfig(**no_auth))
    no_cert = {k: v for k, v in full.items() if k not in ("cert_file", "key_file")}
    with pytest.raises(PrometheusError, match="cannot reach Prometheus"):
        _query(url, HttpClientConfig(**no_cert))
    system_cas = {k: v for k, v in full.items() if k != "ca_file"}
    with pytest.raises(PrometheusError, match="CERTIFICATE_VERIFY_FAILED"):
        _query(url, HttpClientConfig(**system_cas))
    skip = {**system_cas, "insecure_skip_verify": True}
    assert _query(url, HttpClientConfig(**skip))
    # a rotated password file is read at the next request, no restart
    Path(full["basic_auth_password_file"]).write_text("rotated-wrong\n")
    with pytest.raises(PrometheusError, match="HTTP 401"):
        _query(url, HttpClientConfig(**full))


NGINX_CONF = """daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {pki}/server.crt;
        ssl_certificate_key {pki}/server.key;
        location / {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
            proxy_pass http://127.0.0.1:{upstream};
        }}
    }}
}}
"""


@pytest.fixture
def bearer_proxy(pki, tmp_path, prometheus):
    if not os.access(NGINX, os.X_OK):
        pytest.skip("no nginx (apt-get install nginx-light)")
    upstream = prometheus([])
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp_path, port=port, pki=pki, token=TOKEN,
                                      upstream=upstream.port))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 10
    while True:
        assert proc.poll() is None, f"nginx exited: {proc.stderr.read().decode()[-500:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < end, "nginx did not listen within 10 s"
            time.sleep(0.1)
    yield f"https://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.mark.services
def test_bearer_token_through_a_tls_proxy(bearer_proxy, pki, tmp_path):
    ca = str(pki / "ca.crt")
    token = secret(tmp_path, "token", TOKEN)
    (series,) = _wait_answer(bearer_proxy, HttpClientConfig(bearer_token_file=token,
                                                             ca_file=ca))
    assert float(series["values"][-1][1]) == 1.0
    with pytest.raises(PrometheusError, match="HTTP 401"):
        _query(bearer_proxy, HttpClientConfig(bearer_token_file=secret(tmp_path, "t2", "x"),
                                              ca_file=ca))
    with pytest.raises(PrometheusError, match="HTTP 401"):
        _query(bearer_proxy, HttpClientConfig(ca_file=ca))


def _scaler(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runqscale.agent.cli", "scaler", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.services
def test_scaler_cli_reads_the_secured_prometheus(bearer_proxy, pki, tmp_path):
    ca, token = str(pki / "ca.crt"), secret(tmp_path, "token", TOKEN)
    _wait_answer(bearer_proxy, HttpClientConfig(bearer_token_file=token, ca_file=ca))
    ok = _scaler("--prometheus", bearer_proxy, "--prometheus-ca-file", ca,
                 "--prometheus-bearer-token-file", token, "--once")
    assert ok.returncode == 0, ok.stderr
    bad = _scaler("--prometheus", bearer_proxy, "--prometheus-ca-file", ca,
                  "--prometheus-bearer-token-file", secret(tmp_path, "t2", "wrong"), "--once")
    assert bad.returncode == 1 and "HTTP 401" in bad.stderr, bad.stderr


@pytest.mark.parametrize("args, needle", [
    (["--prometheus-basic-auth-username", "u"], "add --prometheus-basic-auth-password-file"),
    (["--prometheus-cert-file", "CA"], "add --prometheus-key-file"),
    (["--prometheus-ca-file", "PW"], "--prometheus-ca-file"),
    (["--prometheus-bearer-token-file", "PW", "--prometheus-basic-auth-username", "u",
      "--prometheus-basic-auth-password-file", "PW"], "give one"),
    (["--prometheus-bearer-token-file", "EMPTY"], "the file is empty"),
])
@pytest.mark.parametrize("command", [[], ["k8s"]])
def test_bad_http_options_are_one_line_naming_the_option(pki, tmp_path, args, needle, command):
    files = {"CA": str(pki / "ca.crt"), "PW": secret(tmp_path, "pw", "x"),
             "EMPTY": secret(tmp_path, "empty", "")}
    r = _scaler(*command, "--prometheus", "http://127.0.0.1:9", "--once" if not command else
                "--dry-run", *[files.get(a, a) for a in args])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_config_validation_is_pure():
    with pytest.raises(HttpConfigError, match="add --prometheus-cert-file"):
        HttpClientConfig(key_file="/k")
    assert HttpClientConfig().headers() == {} and HttpClientConfig().ssl_context() is None
