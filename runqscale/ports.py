"""A free loopback TCP port, for the local actuator's replicas, the benches and the tests.

The kernel picks it (bind to port 0); another process may take it before the caller binds it,
which the callers accept (they retry or fail loudly), as every "free port" helper must.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
