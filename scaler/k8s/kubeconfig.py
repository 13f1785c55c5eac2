"""How the scaler and `runqscale status` reach the API server: kubectl's rules, through the
`kubernetes` package's config loaders.

- `--kubeconfig FILE` / `--context NAME` (or `$KUBECONFIG`, `~/.kube/config` outside a pod):
  every credential kubectl understands — client certificates, tokens, exec plugins (cloud
  CLIs, `kubelogin`), OIDC auth-provider — with the token refreshed when it expires.
- In a pod with neither given: the service account (in-cluster config), as before.
- `--server URL [--token-file F] [--ca-file F] [--insecure]`: a direct connection, no kubeconfig.

The package's Configuration holds the host, TLS files and a refresh hook; `ApiClient` (our small
JSON client: retries, keep-alive per thread, optimistic concurrency) takes those and asks the
Configuration for the Authorization header on each request.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import yaml

from runqscale.scaler.k8s.client import ApiClient


class AccessError(Exception):
    """Bad cluster access options or kubeconfig: one line naming the option and the fix."""


@dataclass(frozen=True)
class ClusterAccess:
    """The command line's choice of cluster and credentials (see the module docstring)."""

    kubeconfig: str | None = None
    context: str | None = None
    server: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    insecure: bool = False

    def client(self, **kw: Any) -> ApiClient:
        """An ApiClient for this choice; `kw` (retry, timeout_seconds, ...) go to ApiClient."""
        if self.server:
            if self.kubeconfig or self.context:
                raise AccessError("--server connects directly: drop --kubeconfig/--context, or "
                                  "drop --server to use the kubeconfig's cluster")
            try:
                return ApiClient(self.server, token_file=self.token_file, ca_file=self.ca_file,
                                 insecure=self.insecure, **kw)
            except ValueError as e:
                raise AccessError(f"--server: {e}") from None
        if self.token_file or self.ca_file or self.insecure:
            raise AccessError("--token-file, --ca-file and --insecure go with --server URL; "
                              "with a kubeconfig, put them in it")
        return client_from(load_configuration(self.kubeconfig, self.context),
                           reload=lambda: load_configuration(self.kubeconfig, self.context), **kw)


def load_configuration(kubeconfig: str | None, context: str | None) -> Any:
    """A `kubernetes.client.Configuration`: in-cluster when in a pod and neither is given,
    otherwise from the kubeconfig (kubectl's default locations when `kubeconfig` is None)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException as e:
            raise AccessError(f"in-cluster config: {e}; pass --kubeconfig FILE") from None
        return cfg
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        # persist: a refreshed OIDC id-token and refresh-token are written back, as kubectl does
        # (identity providers that rotate refresh tokens accept each one only once)
        config.load_kube_config(config_file=kubeconfig, context=context,
                                client_configuration=cfg, persist_config=True)
    except config.ConfigException as e:
        option = "--context" if context and "context" in str(e).lower() else "--kubeconfig"
        raise AccessError(f"{option}: {where}: {e}; pass a kubeconfig kubectl accepts "
                          "(and a context it names)") from None
    except OSError as e:
        raise AccessError(f"--kubeconfig: {where}: cannot read ({e.strerror})") from None
    except (ValueError, TypeError, AttributeError, KeyError, yaml.YAMLError) as e:
        raise AccessError(f"--kubeconfig: {where}: not a kubeconfig ({type(e).__name__}: {e}); "
                          "pass one kubectl accepts") from None
    if not cfg.host:
        raise AccessError(f"--kubeconfig: {where}: its cluster has no server URL")
    return cfg


def client_from(cfg: Any, reload: Callable[[], Any] | None = None, **kw: Any) -> ApiClient:
    """Our ApiClient with a Configuration's host, TLS files and (refreshing) credentials."""
    cert = (cfg.cert_file, cfg.key_file) if cfg.cert_file and cfg.key_file else None
    return ApiClient(cfg.host, ca_file=cfg.ssl_ca_cert, client_cert=cert,
                     insecure=not cfg.verify_ssl, auth=authorization(cfg, reload), **kw)


REFRESH_SKEW_SECONDS = 60.0


def authorization(cfg: Any, reload: Callable[[], Any] | None = None
                  ) -> Callable[[], str | None]:
    """The Authorization header value, per request. The Configuration's refresh hook re-runs an
    exec plugin once its credential expires (in-cluster: re-reads the projected token). An OIDC
    id-token carries no expiry the package tracks, so a bearer JWT within a minute of its `exp`
    reloads the kubeconfig (`reload`), which refreshes it with the refresh token. The lock keeps
    the scaler's worker threads from refreshing at once."""
    lock = threading.Lock()
    current = [cfg]

    def value() -> str | None:
        auth = current[0].auth_settings().get("BearerToken")
        return auth["value"] if auth else None

    def header() -> str | None:
        with lock:
            v = value()
            if reload is not None and v and _expiring(v, REFRESH_SKEW_SECONDS):
                current[0] = reload()
                v = value()
        return v

    return header


def _expiring(header: str, skew: float) -> bool:
    """True if the header is `Bearer <JWT>` whose `exp` is less than `skew` seconds away."""
    scheme, _, token = header.partition(" ")
    parts = token.split(".")
    if scheme.lower() != "bearer" or len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = float(claims["exp"])
    except (ValueError, KeyError, TypeError):
        return False
    return exp - time.time() < skew


def cluster_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--kubeconfig and --context, passed to the command as `kubeconfig` and `context`."""
    f = click.option("--context", default=None,
                     help="kubeconfig context (default: its current-context).")(f)
    f = click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="kubeconfig file as kubectl reads it (exec plugins, OIDC, certs); "
                          "default: in-cluster in a pod, else $KUBECONFIG or ~/.kube/config.")(f)
    return f


class _OneLineUsage(click.UsageError):
    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


def one_line_errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """AccessError out of a command -> a usage error printed as one line, exit 2."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except AccessError as e:
            raise _OneLineUsage(str(e)) from None
    return wrapper
