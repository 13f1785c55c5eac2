"""A real nginx (Debian's) in front of the replicas; its upstreams follow the replica set.

nginx runs as root in the foreground (`daemon off`) with its own prefix directory (config, pid
file, error log, temp dirs) on a loopback port. `set_upstreams` rewrites the config and reloads
(SIGHUP) and returns once a new generation of workers runs it: the old workers finish their
requests in flight (the drain), new connections only go to the new set.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

import psutil

from runqscale.ports import free_port

__all__ = ["HEAD", "NGINX_BIN", "Nginx", "free_port", "render"]

NGINX_BIN = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")

# The main context and the start of `http`: foreground as root, everything under one prefix.
HEAD = """\
# written by runqscale validation; regenerated on every replica change
daemon off;
master_process on;
user root;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
"""

_BODY = """\
    upstream runlang {{
        least_conn;
{servers}
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://runlang;
            proxy_connect_timeout 2s;
            proxy_read_timeout {read_timeout}s;
            proxy_next_upstream error;
        }}
        location = /nginx-upstreams {{ return 200 "{upstreams}\\n"; }}
    }}
}}
"""


def render(prefix: str, port: int, upstreams: list[int], read_timeout_s: float = 30) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in upstreams)
    if not upstreams:  # nginx needs one server; a closed port answers 502 at once
        servers = "        server 127.0.0.1:1 down;"
    return HEAD.format(prefix=prefix, workers=1, nofile=16384) + _BODY.format(
        port=port, servers=servers,
                        read_timeout=int(math.ceil(read_timeout_s)),
                        upstreams=",".join(map(str, upstreams)))


class NginxError(RuntimeError):
    pass


class Nginx:
    """One nginx master. `spawn(argv)` starts it (e.g. inside a cgroup); default: Popen."""

    def __init__(self, port: int | None = None, read_timeout_s: float = 30,
                 spawn: Callable[[list[str]], subprocess.Popen] | None = None) -> None:
        if not os.path.exists(NGINX_BIN):
            raise NginxError(f"no nginx at {NGINX_BIN}; apt-get install nginx-light "
                             "(or set NGINX_BIN)")
        self.port = port or free_port()
        self.read_timeout_s = read_timeout_s
        self.prefix = tempfile.mkdtemp(prefix="runqscale-nginx-")
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.upstreams: list[int] = []
        self._spawn = spawn or (lambda argv: subprocess.Popen(argv, stdin=subprocess.DEVNULL))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write(self, upstreams: list[int]) -> None:
        text = render(self.prefix, self.port, upstreams, self.read_timeout_s)
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf)

    def start(self, upstreams: list[int], timeout_s: float = 10) -> None:
        self._write(upstreams)
        check = subprocess.run([NGINX_BIN, "-t", "-q", "-p", self.prefix, "-c", self.conf],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise NginxError(f"nginx rejected its config: {check.stderr.strip()}")
        self.proc = self._spawn([NGINX_BIN, "-p", self.prefix, "-c", self.conf])
        self.upstreams = list(upstreams)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NginxError(f"nginx exited at start: {self.error_log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise NginxError(f"nginx did not listen on port {self.port} within {timeout_s:g} s")

    def workers(self) -> set[int]:
        if self.proc is None:
            return set()
        try:
            return {c.pid for c in psutil.Process(self.proc.pid).children()}
        except psutil.Error:
            return set()

    def set_upstreams(self, upstreams: list[int], timeout_s: float = 10,
                      drain_timeout_s: float = 5) -> float:
        """Point nginx at `upstreams`; returns the seconds until only new workers accept."""
        t = self.reload(lambda: self._write(upstreams), timeout_s, drain_timeout_s)
        self.upstreams = list(upstreams)
        return t

    def reload(self, write: Callable[[], None], timeout_s: float = 10,
               drain_timeout_s: float = 5) -> float:
        """`write()` the new config, SIGHUP, and return the seconds until only new workers
        accept (their old generation drained, bounded by `drain_timeout_s`)."""
        if self.proc is None or self.proc.poll() is not None:
            raise NginxError("nginx is not running")
        t0 = time.monotonic()
        old = self.workers()
        write()
        self.proc.send_signal(signal.SIGHUP)
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            now = self.workers()
            if now - old:  # the new generation runs ...
                break
            time.sleep(0.01)
        else:
            raise NginxError(f"nginx did not reload within {timeout_s:g} s: "
                             f"{self.error_log_tail()}")
        # ... and the old one still accepts until it handles its QUIT; it exits once its
        # requests in flight are answered. Wait for that (bounded: a stuck request is the
        # old upstream's problem, not a reason to block the loop).
        drain_deadline = time.monotonic() + drain_timeout_s
        while self.workers() & old and time.monotonic() < drain_deadline:
            time.sleep(0.01)
        return time.monotonic() - t0

    def error_log_tail(self, n: int = 3) -> str:
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return " | ".join(ln.strip() for ln in f.readlines()[-n:])
        except OSError:
            return "(no error log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
