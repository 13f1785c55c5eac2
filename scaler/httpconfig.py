"""How the scaler authenticates to a secured Prometheus: the subset of Prometheus' own HTTP client
config (`http_config` in its docs: bearer token file, basic auth, tls_config) that a query client
needs, as one frozen value and one option group shared by `runqscale scaler` and
`runqscale scaler k8s`.

Secrets are read from files at each request, as Prometheus does, so a rotated token or password
file takes effect without a restart; the TLS context is built once, when the options are read,
so a bad CA or key fails at start with the option named.
"""

from __future__ import annotations

import base64
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click


class HttpConfigError(ValueError):
    """One line naming the option and the fix."""


@dataclass(frozen=True)
class HttpClientConfig:
    bearer_token_file: str | None = None
    basic_auth_username: str | None = None
    basic_auth_password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False

    def __post_init__(self) -> None:
        if self.bearer_token_file and self.basic_auth_username:
            raise HttpConfigError("--prometheus-bearer-token-file and "
                                  "--prometheus-basic-auth-username: give one (as Prometheus: "
                                  "at most one authorization method)")
        if bool(self.basic_auth_username) != bool(self.basic_auth_password_file):
            missing = ("--prometheus-basic-auth-password-file" if self.basic_auth_username
                       else "--prometheus-basic-auth-username")
            raise HttpConfigError(f"basic auth needs both a username and a password file: "
                                  f"add {missing}")
        if bool(self.cert_file) != bool(self.key_file):
            missing = "--prometheus-key-file" if self.cert_file else "--prometheus-cert-file"
            raise HttpConfigError(f"a client certificate needs its key and the key its "
                                  f"certificate: add {missing}")

    @property
    def needs_tls_context(self) -> bool:
        return bool(self.ca_file or self.cert_file or self.insecure_skip_verify)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for https URLs (None: urllib's default, the system CAs)."""
        if not self.needs_tls_context:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (ssl.SSLError, OSError) as e:
            raise HttpConfigError(f"--prometheus-ca-file {self.ca_file}: not a PEM CA bundle "
                                  f"({_why(e)})") from None
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as e:
                raise HttpConfigError(
                    f"--prometheus-cert-file {self.cert_file} / --prometheus-key-file "
                    f"{self.key_file}: not a matching PEM certificate and key ({_why(e)})"
                ) from None
        return ctx

    def headers(self) -> dict[str, str]:
        """The Authorization header, from the secret files as they are now."""
        if self.bearer_token_file:
            token = _read_secret(self.bearer_token_file, "--prometheus-bearer-token-file")
            return {"Authorization": f"Bearer {token}"}
        if self.basic_auth_username and self.basic_auth_password_file:
            password = _read_secret(self.basic_auth_password_file,
                                    "--prometheus-basic-auth-password-file")
            raw = f"{self.basic_auth_username}:{password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        return {}

    def check(self) -> ssl.SSLContext | None:
        """Read every file once (a missing or empty secret fails at start) and build the TLS
        context."""
        self.headers()
        return self.ssl_context()


def _why(e: BaseException) -> str:
    return getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)


def _read_secret(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise HttpConfigError(f"{option} {path}: cannot read ({_why(e)})") from None
    if not value:
        raise HttpConfigError(f"{option} {path}: the file is empty; put the secret in it")
    return value


_FILE = click.Path(exists=True, dir_okay=False)


def prometheus_http_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the option group and hands the command one `prometheus_http: HttpClientConfig`
    (already checked: files read, TLS context built; bad ones are one line, exit 2)."""
    names = ("prometheus_bearer_token_file", "prometheus_basic_auth_username",
             "prometheus_basic_auth_password_file", "prometheus_ca_file",
             "prometheus_cert_file", "prometheus_key_file", "prometheus_insecure_skip_verify")

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = [kwargs.pop(n) for n in names]
        try:
            cfg = HttpClientConfig(*values)
            cfg.check()
        except HttpConfigError as e:
            raise _OneLineUsage(str(e)) from None
        return f(*args, prometheus_http=cfg, **kwargs)

    options = [
        click.option("--prometheus-bearer-token-file", type=_FILE,
                     help="Prometheus: send `Authorization: Bearer <file content>` "
                          "(re-read per request)."),
        click.option("--prometheus-basic-auth-username", metavar="NAME",
                     help="Prometheus: basic auth user (with --prometheus-basic-auth-password-"
                          "file)."),
        click.option("--prometheus-basic-auth-password-file", type=_FILE,
                     help="Prometheus: basic auth password, from this file."),
        click.option("--prometheus-ca-file", type=_FILE,
                     help="Prometheus: CA bundle (PEM) that signed its certificate."),
        click.option("--prometheus-cert-file", type=_FILE,
                     help="Prometheus: client certificate (PEM), with --prometheus-key-file."),
        click.option("--prometheus-key-file", type=_FILE,
                     help="Prometheus: the client certificate's key (PEM)."),
        click.option("--prometheus-insecure-skip-verify", is_flag=True,
                     help="Prometheus: do not verify its certificate (tests only)."),
    ]
    for opt in reversed(options):
        wrapper = opt(wrapper)
    return wrapper


class _OneLineUsage(click.UsageError):
    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)
