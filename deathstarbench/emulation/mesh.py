"""The emulation's front end and service mesh: one real nginx.

The front end listens on one port with DeathStarBench's wrk2 routes (its nginx-web-server calls
compose-post, home-timeline and user-timeline); every logic service also gets a port of its own
(its Kubernetes Service), proxying over keep-alive connections to that service's replicas. When
a service's replicas change, `balancer(service).set_upstreams(ports)` rewrites the config and
reloads, as validation.nginx does for one upstream.
"""

from __future__ import annotations

import math
import os
import threading

from runqscale.validation.nginx import HEAD, Nginx, free_port

ROUTES = {  # front-end path -> (service, method)
    "/wrk2-api/home-timeline/read": ("home-timeline-service", "ReadHomeTimeline"),
    "/wrk2-api/user-timeline/read": ("user-timeline-service", "ReadUserTimeline"),
    "/wrk2-api/post/compose": ("compose-post-service", "ComposePost"),
}

_PROXY = """\
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_connect_timeout 2s;
    proxy_read_timeout {read_timeout}s;
    proxy_next_upstream error;
"""


def _upstream(service: str, ports: list[int]) -> str:
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in ports) \
        or "        server 127.0.0.1:1 down;\n"  # nginx needs one; a closed port answers 502
    return (f"    upstream {service} {{\n        least_conn;\n{servers}"
            "        keepalive 32;\n    }\n")


def render(prefix: str, front_port: int, mesh_ports: dict[str, int],
           upstreams: dict[str, list[int]], read_timeout_s: float = 30) -> str:
    out = [HEAD.format(prefix=prefix, workers=2, nofile=32768),
           _PROXY.format(read_timeout=int(math.ceil(read_timeout_s)))]
    for svc in mesh_ports:
        out.append(_upstream(svc, upstreams.get(svc, [])))
    for svc, port in mesh_ports.items():
        out.append(f"    server {{\n        listen 127.0.0.1:{port} backlog=4096;\n"
                   f"        location / {{ proxy_pass http://{svc}; }}\n    }}\n")
    out.append(f"    server {{\n        listen 127.0.0.1:{front_port} backlog=4096;\n")
    for path, (svc, method) in ROUTES.items():
        out.append(f"        location = {path} {{ proxy_pass http://{svc}/{method}; }}\n")
    out.append("    }\n}\n")
    return "".join(out)


class _ServiceBalancer:
    def __init__(self, mesh: Mesh, service: str) -> None:
        self.mesh, self.service = mesh, service

    def set_upstreams(self, upstreams: list[int]) -> float:
        return self.mesh.set_service_upstreams(self.service, upstreams)


class Mesh(Nginx):
    def __init__(self, services: list[str], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.mesh_ports = {s: free_port() for s in services}
        self.service_upstreams: dict[str, list[int]] = {s: [] for s in services}
        self._lock = threading.Lock()

    def _write(self, upstreams: list[int]) -> None:  # the front end has no upstream of its own
        del upstreams
        text = render(self.prefix, self.port, self.mesh_ports, self.service_upstreams,
                      self.read_timeout_s)
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf)

    def balancer(self, service: str) -> _ServiceBalancer:
        return _ServiceBalancer(self, service)

    def set_service_upstreams(self, service: str, ports: list[int]) -> float:
        with self._lock:
            self.service_upstreams[service] = list(ports)
            return self.reload(lambda: self._write([]))
