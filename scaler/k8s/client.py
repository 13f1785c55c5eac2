"""A small Kubernetes API client over plain HTTPS (http.client): JSON in, JSON out.

Only what the scaler needs: GET/LIST, POST, PUT (optimistic concurrency through
`metadata.resourceVersion`), PATCH (merge and strategic merge), server-side dry-run. Throttling
(429) and server errors (5xx) and an unreachable server are retried with capped exponential
backoff (honouring `Retry-After`); anything else raises `ApiError` at once, so a caller sees a 409
and can re-read. Time and randomness are injected (`sleep`, `rand`) so retries test
deterministically. Connections are kept alive, one per thread (a scaler step over 1,000 workloads
is ~3,000 calls; a TLS handshake each would double its time).

Where the connection settings come from (kubeconfig with exec plugins and OIDC, in-cluster) is
the `kubernetes` package's job (`kubeconfig.py` builds this client from its Configuration, `auth`
then asks it for a fresh Authorization header per request); its generated models are not used.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runqscale.tokens import TokenFile

log = logging.getLogger(__name__)

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

RETRIABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A Kubernetes API answer that is not 2xx (status 0: the server could not be reached)."""

    def __init__(self, status: int, reason: str, message: str, method: str = "", path: str = ""):
        self.status = status
        self.reason = reason
        self.message = message
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def unavailable(self) -> bool:
        return self.status == 0 or self.status in RETRIABLE_STATUS


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter for 429, 5xx and connection failures."""

    attempts: int = 5
    base_seconds: float = 0.2
    cap_seconds: float = 5.0

    def delay(self, attempt: int, rand: Callable[[], float], retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap_seconds)
        return rand() * min(self.cap_seconds, self.base_seconds * (2**attempt))


class ApiClient:
    """JSON over HTTPS to one API server, authenticated by a bearer token (file or string)."""

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        token_file: str | None = None,
        ca_file: str | None = None,
        client_cert: tuple[str, str] | None = None,
        insecure: bool = False,
        timeout_seconds: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        user_agent: str = "runqscale-scaler",
        auth: Callable[[], str | None] | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._token = token
        self._token_file = TokenFile(token_file) if token_file else None
        self._auth = auth  # the whole Authorization header value, e.g. refreshed by an exec plugin
        self.timeout = timeout_seconds
        self.retry = retry
        self._sleep = sleep
        self._rand = rand
        self.user_agent = user_agent
        parsed = urllib.parse.urlsplit(self.server)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ValueError(f"API server URL must be https://host[:port], got {server!r}")
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._base_path = parsed.path.rstrip("/")
        ctx = ssl.create_default_context(cafile=ca_file)
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if client_cert:
            ctx.load_cert_chain(*client_cert)
        self._ctx = ctx
        self._local = threading.local()

    @classmethod
    def in_cluster(cls, **kw: Any) -> ApiClient:
        """The pod's service account: the projected token (re-read when it rotates) and CA."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError(
                "not in a pod (KUBERNETES_SERVICE_HOST unset); pass --server and --token-file"
            )
        if ":" in host:
            host = f"[{host}]"
        return cls(
            f"https://{host}:{port}",
            token_file=f"{SA_DIR}/token",
            ca_file=f"{SA_DIR}/ca.crt",
            **kw,
        )

    # ---------------------------------------------------------------- transport

    def _bearer(self) -> str | None:
        return self._token_file.token() if self._token_file else self._token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = JSON,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """One API call with retries on 429/5xx/unreachable; raises ApiError otherwise."""
        query = dict(params or {})
        if dry_run:
            query["dryRun"] = "All"
        target = self._base_path + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        last: ApiError | None = None
        for attempt in range(self.retry.attempts):
            retry_after: float | None = None
            try:
                status, headers, raw = self._once(method, target, data, content_type)
            except (OSError, http.client.HTTPException) as exc:
                last = ApiError(0, "Unreachable", str(exc) or type(exc).__name__, method, path)
            else:
                if status < 300:
                    return json.loads(raw) if raw else {}
                err = _api_error(status, raw, method, path)
                if status not in RETRIABLE_STATUS:
                    raise err
                ra = headers.get("Retry-After")
                retry_after = float(ra) if ra and ra.strip().isdigit() else None
                last = err
            if attempt + 1 < self.retry.attempts:
                delay = self.retry.delay(attempt, self._rand, retry_after)
                log.debug("%s; retrying in %.2f s", last, delay)
                self._sleep(delay)
        assert last is not None
        raise last

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._scheme == "https":
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                                   context=self._ctx)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _once(
        self, method: str, target: str, data: bytes | None, ctype: str
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        headers = {"Accept": JSON, "User-Agent": self.user_agent}
        if data is not None:
            headers["Content-Type"] = ctype
        if self._auth is not None:
            value = self._auth()
            if value:
                headers["Authorization"] = value
        else:
            try:
                token = self._bearer()
            except ValueError as exc:  # a broken token file: answered as the API would
                raise ApiError(401, "Unauthorized", str(exc), method, target) from None
            if token:
                headers["Authorization"] = f"Bearer {token}"
        # A kept-alive connection the server closed fails on first use: reconnect once at once.
        for fresh in (False, True):
            conn = self._connection()
            try:
                conn.request(method, target, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, resp.msg, raw
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh:
                    raise
            except (OSError, http.client.HTTPException):
                self.close()
                raise
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- verbs

    def get(self, path: str, **params: str) -> dict[str, Any]:
        return self.request("GET", path, params=params or None)

    def create(self, path: str, obj: Mapping[str, Any], dry_run: bool = False) -> dict[str, Any]:
        return self.request("POST", path, obj, dry_run=dry_run)

    def update(self, path: str, obj: Mapping[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """PUT: fails with 409 if `metadata.resourceVersion` is not the stored one."""
        return self.request("PUT", path, obj, dry_run=dry_run)

    def patch(
        self,
        path: str,
        patch: Mapping[str, Any],
        content_type: str = MERGE_PATCH,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        return self.request("PATCH", path, patch, content_type=content_type, dry_run=dry_run)


def _api_error(status_code: int, raw: bytes, method: str, path: str) -> ApiError:
    try:
        status = json.loads(raw or b"{}")
    except ValueError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    return ApiError(
        status_code,
        str(status.get("reason") or http.client.responses.get(status_code, "")),
        str(status.get("message") or ""),
        method,
        path,
    )


# ------------------------------------------------------------------------ paths

_GROUPS = {
    "Deployment": ("apis/apps/v1", "deployments"),
    "StatefulSet": ("apis/apps/v1", "statefulsets"),
    "Pod": ("api/v1", "pods"),
    "Event": ("api/v1", "events"),
    "Lease": ("apis/coordination.k8s.io/v1", "leases"),
}


def path(kind: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    """`/apis/apps/v1/namespaces/ns/deployments/name/scale` and friends."""
    try:
        prefix, plural = _GROUPS[kind]
    except KeyError:
        raise ValueError(f"unsupported kind {kind!r}; one of {', '.join(_GROUPS)}") from None
    p = f"/{prefix}"
    if namespace is not None:
        p += f"/namespaces/{urllib.parse.quote(namespace)}"
    p += f"/{plural}"
    if name is not None:
        p += f"/{urllib.parse.quote(name)}"
    if sub is not None:
        p += f"/{sub}"
    return p
