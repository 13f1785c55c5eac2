"""Pod uid -> namespace / pod name / container names, from one of:

- a file holding a PodList (the kubelet's `/pods` JSON), re-read when it changes (tests, debugging);
- the kubelet: `GET <url>/pods` (10250 with a bearer token, or the read-only 10255), polled every
  `refresh` seconds and sooner (at most once per `min_gap`) when a cgroup names an unknown pod;
- the API server: one list + watch of this node's pods (`fieldSelector=spec.nodeName=<node>`).

Plain HTTP/1.1 GETs (runqscale/http1.py) and json, never the kubernetes package (its import
alone costs more memory than the whole agent's budget), nor http.client (1.1 MB of RSS on top
of the agent's other imports, mostly the email package it parses headers with) or
urllib.request (more again). Never a request per scrape: the loop only reads the latest table.
Fetching runs on a background thread, so a slow kubelet never stalls sampling.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runqscale.agent.identity import container_id_of
from runqscale.http1 import Response, get
from runqscale.tokens import TokenFile

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_STATUS_KEYS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")


@dataclass(frozen=True)
class PodInfo:
    uid: str
    namespace: str
    name: str
    containers: Mapping[str, str]  # container id (hex) -> container name


@dataclass(frozen=True)
class PodTable:
    version: int = 0  # bumped on every change; 0 = nothing loaded yet
    pods: Mapping[str, PodInfo] = field(default_factory=dict)


def pod_info(pod: Mapping[str, Any]) -> PodInfo | None:
    """The pod's identity; None for a pod without a uid or with malformed metadata (a bad pod is
    skipped, the others in the list are kept). A malformed container status is skipped alone."""
    if not isinstance(pod, Mapping):
        return None
    meta = pod.get("metadata") or {}
    if not isinstance(meta, Mapping):
        return None
    uid, ns, name = meta.get("uid"), meta.get("namespace", ""), meta.get("name", "")
    if not uid or not isinstance(uid, str) or not isinstance(ns, str) or not isinstance(name, str):
        return None
    status = pod.get("status") or {}
    if not isinstance(status, Mapping):
        status = {}
    containers = {}
    for key in _STATUS_KEYS:
        statuses = status.get(key) or ()
        if not isinstance(statuses, list):
            continue
        for cs in statuses:
            if not isinstance(cs, Mapping):
                continue
            cid, cname = cs.get("containerID"), cs.get("name")
            if cid and cname and isinstance(cid, str) and isinstance(cname, str):
                containers[container_id_of(cid)] = cname
    return PodInfo(uid.lower(), ns, name, containers)


def parse_pod_list(doc: Mapping[str, Any]) -> dict[str, PodInfo]:
    """uid -> PodInfo of the well-formed pods; ValueError when `doc` is not a PodList at all."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("items", []), list):
        raise ValueError("not a PodList: expected an object with an 'items' list")
    out = {}
    for pod in doc.get("items") or ():
        info = pod_info(pod)
        if info:
            out[info.uid] = info
    return out


class PodSource:
    """Base: no pods known (outside Kubernetes). Subclasses publish a new PodTable on change."""

    kind = "none"

    def __init__(self) -> None:
        self._table = PodTable()
        self.errors = 0
        self.last_error: str | None = None

    def table(self) -> PodTable:
        return self._table

    def poll(self) -> None:
        """Called by the sampling loop once per interval; must be cheap."""

    def wanted(self, uid: str) -> None:
        """A cgroup names a pod uid that is not in the table: refresh soon (rate-limited)."""

    def close(self) -> None:
        pass

    def _publish(self, pods: Mapping[str, PodInfo]) -> None:
        if pods != self._table.pods:
            self._table = PodTable(self._table.version + 1, dict(pods))

    def secrets(self) -> list[str]:
        """Strings that must never reach a log line (tokens, URL passwords)."""
        return []

    def _error(self, msg: str) -> None:
        for secret in self.secrets():
            if secret:
                msg = msg.replace(secret, "<redacted>")
        changed = msg != self.last_error
        # the message before the count: a reader that sees the count sees its message (the
        # other order failed a CI run once: errors 1, last_error None)
        self.last_error = msg
        self.errors += 1
        if changed:
            print(f"runqscale agent: pods ({self.kind}): {msg}", file=sys.stderr, flush=True)


class FilePodSource(PodSource):
    """A PodList JSON file; re-read when its mtime or size changes."""

    kind = "file"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.poll()

    def poll(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as e:
            self._error(f"{self.path}: {e.strerror}")
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            with open(self.path, "rb") as f:
                pods = parse_pod_list(json.load(f))
        except (OSError, ValueError) as e:
            self._error(f"{self.path}: {e}")
            return
        self._stamp = stamp
        self.last_error = None
        self._publish(pods)


@dataclass(frozen=True)
class HttpAuth:
    token_file: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    _tokens: TokenFile | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tokens", TokenFile(self.token_file) if self.token_file
                           else None)

    @property
    def seen(self) -> list[str]:
        """The tokens last read (a rotated one stays listed a while): redacted from logs."""
        return self._tokens.seen if self._tokens else []

    def headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self._tokens:
            h["Authorization"] = "Bearer " + self._tokens.token()  # re-read when it rotates
        return h

    def context(self) -> Any:
        """The TLS context for an https URL (the caller decides from the parsed scheme, which
        is https in any case: `HTTPS://` too)."""
        import ssl

        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=self.ca_file)


def redact_url(url: str) -> str:
    """The URL without a password in its user-info part (https://user:pw@host -> https://***@host)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _url_secrets(url: str) -> list[str]:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return [url]
    return [parts.password] if parts.password else []


class HttpError(OSError):
    """A non-2xx answer: its status, reason and the start of its body (what the server said)."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"HTTP {status} {reason}" + (f": {body}" if body else ""))
        self.status = status


def _open(url: str, auth: HttpAuth, timeout: float) -> Response:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact_url(url)}: not an http(s) URL")
    https = parts.scheme == "https"  # urlsplit lower-cases it: HTTPS:// is TLS too
    port = parts.port or (443 if https else 80)
    tls = auth.context() if https else None
    resp = get(parts.hostname, port, (parts.path or "/") + (f"?{parts.query}" if parts.query
                                                            else ""),
               auth.headers(), timeout, tls)
    if not 200 <= resp.status < 300:
        with resp:
            try:
                body = resp.read(300).decode("utf-8", "replace").strip()
            except (OSError, ValueError):
                body = ""  # the status says enough
        raise HttpError(resp.status, resp.reason, " ".join(body.split()))
    return resp


class KubeletPodSource(PodSource):
    """Polls the kubelet's `/pods` on a background thread."""

    kind = "kubelet"

    def __init__(self, url: str, auth: HttpAuth, refresh: float = 10.0, min_gap: float = 1.0,
                 timeout: float = 5.0) -> None:
        super().__init__()
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/pods") else "/pods")
        self.auth, self.refresh, self.min_gap, self.timeout = auth, refresh, min_gap, timeout
        self.fetches = 0
        self.shown_url = redact_url(self.url)
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet-pods", daemon=True)
        self._thread.start()

    def fetch(self) -> None:
        self.fetches += 1
        try:
            with _open(self.url, self.auth, self.timeout) as resp:
                pods = parse_pod_list(json.load(resp))
        except Exception as e:  # noqa: BLE001 - any failure: keep the last table, say why
            self._error(f"GET {self.shown_url}: {e}")
            return
        self.last_error = None
        self._publish(pods)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.fetch()
            self._poke.wait(self.refresh)
            self._poke.clear()
            rest = self.min_gap - (time.monotonic() - t0)
            if rest > 0:
                self._stop.wait(rest)

    def wanted(self, uid: str) -> None:
        self._poke.set()

    def secrets(self) -> list[str]:
        return [*self.auth.seen, *_url_secrets(self.url)]

    def close(self) -> None:
        self._stop.set()
        self._poke.set()


class ApiServerPodSource(PodSource):
    """One node-scoped list + watch against the API server, re-listing when the watch expires."""

    kind = "apiserver"

    def __init__(self, server: str, node: str, auth: HttpAuth, timeout: float = 10.0,
                 watch_seconds: int = 300) -> None:
        super().__init__()
        self.server = server.rstrip("/")
        self.node, self.auth, self.timeout, self.watch_seconds = node, auth, timeout, watch_seconds
        self.lists = 0
        self._pods: dict[str, PodInfo] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apiserver-pods", daemon=True)
        self._thread.start()

    def _url(self, **extra: str) -> str:
        q = {"fieldSelector": f"spec.nodeName={self.node}", **extra}
        return f"{self.server}/api/v1/pods?{urllib.parse.urlencode(q)}"

    def _run(self) -> None:
        backoff = 1.0
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                rv = self._watch(rv)
                backoff = 1.0
            except _Gone:
                rv = None
            except Exception as e:  # noqa: BLE001 - reconnect with backoff, keep the table
                self._error(f"{redact_url(self.server)}: {e}")
                rv = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _list(self) -> str:
        self.lists += 1
        with _open(self._url(), self.auth, self.timeout) as resp:
            doc = json.load(resp)
        self._pods = parse_pod_list(doc)
        self._publish(self._pods)
        self.last_error = None
        return str((doc.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(self, rv: str) -> str:
        url = self._url(watch="1", resourceVersion=rv, allowWatchBookmarks="true",
                        timeoutSeconds=str(self.watch_seconds))
        with _open(url, self.auth, self.watch_seconds + self.timeout) as resp:
            for ev in _json_lines(resp):
                if self._stop.is_set():
                    break
                kind, obj = ev.get("type"), ev.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion", rv))
                if kind == "BOOKMARK":
                    continue
                info = pod_info(obj)
                if info is None:
                    continue
                if kind == "DELETED":
                    self._pods.pop(info.uid, None)
                else:
                    self._pods[info.uid] = info
                self._publish(self._pods)
        return rv

    def secrets(self) -> list[str]:
        return [*self.auth.seen, *_url_secrets(self.server)]

    def close(self) -> None:
        self._stop.set()


class _Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


def _json_lines(resp: Any) -> Iterator[dict[str, Any]]:
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.strip()
        if line:
            yield json.loads(line)


def in_cluster_apiserver() -> str | None:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
        "KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"
