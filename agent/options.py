"""The agent's flags, parsed with argparse: the DaemonSet runs `python3 -OO -m runqscale.agent`,
and click (with the modules that wrap it) held 0.9 MB of the agent's RSS at 500 containers for
a parse done once at start (paired, docs/bench/HISTORY.md, stop 45). `runqscale agent` forwards
its arguments here too (runqscale/cli.py), so there is one parser. Errors are one line naming
the option and the fix, exit code 2, as for every command.

`--config FILE` (YAML, JSON or TOML; runqscale/config.py) gives values for the options not
given as flags; each is converted and checked exactly as the flag would be. Unlike click,
argparse takes a value that starts with `-` only as `--opt=VALUE`; its error says so.
"""

from __future__ import annotations

import argparse
import difflib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from runqscale.agent.errors import fail
from runqscale.config import ConfigError, ConfigKey, file_values
from runqscale.probes.backends import BACKENDS, HIERARCHIES
from runqscale.values import duration_seconds, listen_address

PROG = "runqscale agent"
PODS_SOURCES = ("auto", "file", "kubelet", "apiserver", "none")
MIN_CGROUPS = 16

DESCRIPTION = "Node agent: measure run-queue latency per container and serve it on /metrics."
EXAMPLES = """examples:
  runqscale agent                                  # :9100, 1 s interval, 10 s window
  runqscale agent --listen 127.0.0.1:9100 --pods-file pods.json
  runqscale agent --kubelet-url https://$NODE_NAME:10250 --kubelet-insecure-tls
  runqscale agent --config /etc/runqscale/agent.yaml"""


@dataclass(frozen=True)
class AgentOptions:
    """The agent's settings; the defaults here are the flags' defaults (DEFAULTS)."""

    listen: tuple[str, int] = ("0.0.0.0", 9100)
    interval: float = 1.0
    window: float = 10.0
    backend: str = "auto"
    hierarchy: str = "auto"
    node_name: str | None = None  # None: $NODE_NAME or the host name (parse_agent_args)
    pods_source: str = "auto"
    pods_file: str | None = None
    kubelet_url: str | None = None
    kubelet_token_file: str | None = None
    kubelet_ca_file: str | None = None
    kubelet_insecure_tls: bool = False
    apiserver_url: str | None = None
    pods_refresh: float = 10.0
    cgroups: tuple[str, ...] = ()
    max_cgroups: int = 8192
    tls_cert: str | None = None
    tls_key: str | None = None
    auth_token_file: str | None = None
    gzip: bool = False


DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(AgentOptions)}


def default_node() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


# --- value types: each returns the value or raises ArgumentTypeError (argparse names the flag)

def _checked(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        try:
            return convert(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return check


def _cgroup_capacity(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    try:
        n = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        n = None
    if n is None:
        raise ValueError(f"{value!r} is not a whole number")
    if n < MIN_CGROUPS:
        raise ValueError(f"{n} is below {MIN_CGROUPS}; give at least {MIN_CGROUPS}")
    return n


def _file(exists: bool) -> Callable[[Any], str]:
    def file(value: Any) -> str:
        path = str(value)
        if not path:
            raise ValueError("an empty path; give a file")
        if exists and not os.path.exists(path):
            raise ValueError(f"{path!r} does not exist; give an existing file")
        if os.path.isdir(path):
            raise ValueError(f"{path!r} is a directory; give a file")
        if os.path.exists(path) and not os.access(path, os.R_OK):
            raise ValueError(f"{path!r} is not readable by this user; fix its permissions")
        return path

    return file


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse says "argument --interval: ..."; the option's name is enough
        message = message.removeprefix("argument ")
        if message.startswith("unrecognized arguments: "):
            words = message.split(": ", 1)[1].split()
            flag = next((w.split("=", 1)[0] for w in words if w.startswith("--")), None)
            if flag is not None:  # a typo: name the option meant, as click did
                near = difflib.get_close_matches(flag, list(self._option_string_actions), n=1)
                message = f"no such option {flag}" + (f"; did you mean {near[0]}?" if near
                                                       else "; see --help")
        elif message.endswith(": expected one argument"):
            opt = message.split(":", 1)[0]
            message += f" (a value that starts with '-' goes as {opt}=VALUE)"
        fail(message, usage=True, prog=PROG)


def build_parser() -> argparse.ArgumentParser:
    """Every default is None (unset): a value then comes from the flag, else --config, else
    DEFAULTS, so a flag wins over the file and the file over the built-in default."""
    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EXAMPLES, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--config", metavar="FILE", type=_checked(_file(exists=False)),
        help="YAML, JSON or TOML file with these options as keys (e.g. `listen: ':9100'`); "
             "flags override it.")
    add("--listen", type=_checked(listen_address), metavar="HOST:PORT",
        help="Address for /metrics and /healthz. [default: :9100]")
    add("--interval", type=_checked(duration_seconds), metavar="DURATION",
        help="How often to read the probe. [default: 1s]")
    add("--window", type=_checked(duration_seconds), metavar="DURATION",
        help="Window of the p95/p99 gauges; also how long a removed container's series stay. "
             "[default: 10s]")
    add("--backend", choices=BACKENDS,
        help="Probe backend: core (CO-RE/libbpf), bcc, or auto. [default: auto]")
    add("--hierarchy", choices=HIERARCHIES,
        help="Cgroup hierarchy to attribute to (auto: v1 cpu where mounted, else v2). "
             "[default: auto]")
    add("--node-name", type=str,
        help="Value of the `node` label; also selects this node's pods on the API server. "
             "[default: $NODE_NAME or hostname]")
    add("--pods-source", choices=PODS_SOURCES,
        help="Where pod names come from. auto: --pods-file, else --kubelet-url, else the API "
             "server when in a cluster, else none (labels are cgroup paths). [default: auto]")
    add("--pods-file", type=_checked(_file(exists=False)), metavar="FILE",
        help="A PodList JSON file (the kubelet's /pods), re-read when it changes.")
    add("--kubelet-url", type=str,
        help="Kubelet base URL, e.g. https://$NODE_NAME:10250 or http://127.0.0.1:10255 "
             "(read-only port).")
    add("--kubelet-token-file", type=_checked(_file(exists=False)), metavar="FILE",
        help="Bearer token for the kubelet (default: the pod's service-account token).")
    add("--kubelet-ca-file", type=_checked(_file(exists=True)), metavar="FILE",
        help="CA bundle that signed the kubelet's serving certificate.")
    add("--kubelet-insecure-tls", action="store_true", default=None,
        help="Do not verify the kubelet's certificate (self-signed serving certs).")
    add("--apiserver-url", type=str, help="API server URL (default: in-cluster).")
    add("--pods-refresh", type=_checked(duration_seconds), metavar="DURATION",
        help="Kubelet pod-list poll period (sooner when an unknown pod appears). "
             "[default: 10s]")
    add("--cgroup", dest="cgroups", action="append", type=str, metavar="PATH",
        help="Only export this cgroup and its children (relative to the hierarchy root). "
             "Repeatable.")
    add("--max-cgroups", type=_checked(_cgroup_capacity), metavar="N",
        help=f"Capacity of the probe's per-cgroup map (at least {MIN_CGROUPS}). "
             "[default: 8192]")
    add("--tls-cert", type=_checked(_file(exists=True)), metavar="FILE",
        help="Serve HTTPS with this certificate (PEM); needs --tls-key.")
    add("--tls-key", type=_checked(_file(exists=True)), metavar="FILE",
        help="Private key (PEM) for --tls-cert.")
    add("--auth-token-file", type=_checked(_file(exists=True)), metavar="FILE",
        help="Require `Authorization: Bearer <token>` on /metrics (re-read on change).")
    add("--gzip", action=argparse.BooleanOptionalAction, default=None,
        help="Compress /metrics for clients that accept gzip (Prometheus does): ~19x less "
             "scrape traffic for ~1.15x the agent's CPU (at 500 containers, a scrape every "
             "15 s). [default: no]")
    return p


def _config_keys(parser: argparse.ArgumentParser) -> dict[str, tuple[ConfigKey, Any]]:
    """Each option a config file may set, with its argparse action (to convert the value)."""
    out = {}
    for a in parser._actions:  # argparse has no public list of its actions
        if a.dest in ("help", "config"):
            continue
        long = tuple(o[2:] for o in a.option_strings if o.startswith("--") and
                     not o.startswith("--no-"))
        shape = ("multiple" if isinstance(a, argparse._AppendAction) else
                 "bool" if a.nargs == 0 else
                 "path" if a.metavar == "FILE" else "scalar")
        out[a.dest] = (ConfigKey(a.dest, long, shape), a)
    return out


def _from_config(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The file's values, converted and checked as their flags are."""
    keys = _config_keys(parser)
    try:
        raw = file_values(path, [k for k, _ in keys.values()])
    except ConfigError as e:
        fail(f"--config {e}", usage=True, prog=PROG)
    out = {}
    for dest, (spelled, value) in raw.items():
        key, action = keys[dest]
        where = f"--config {path}: key '{spelled}' (--{key.options[0]})"
        if key.shape == "bool":
            out[dest] = value  # file_values checked it is a bool
            continue
        items = value if key.shape == "multiple" else [value]
        converted = []
        for v in items:
            try:
                v = action.type(v) if action.type else v
            except argparse.ArgumentTypeError as e:
                fail(f"{where}: {e}", usage=True, prog=PROG)
            if action.choices is not None and v not in action.choices:
                fail(f"{where}: {v!r} is not one of {', '.join(action.choices)}", usage=True,
                     prog=PROG)
            converted.append(v)
        out[dest] = tuple(converted) if key.shape == "multiple" else converted[0]
    return out


def parse_agent_args(argv: list[str] | None = None) -> AgentOptions:
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    from_file = _from_config(given["config"], parser) if given["config"] else {}
    values = {}
    for name, default in DEFAULTS.items():
        v = given.get(name)
        values[name] = v if v is not None else from_file.get(name, default)
    values["cgroups"] = tuple(values["cgroups"])
    if values["node_name"] is None:
        values["node_name"] = default_node()
    return AgentOptions(**values)
