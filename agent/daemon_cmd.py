"""`runqscale agent`: the DaemonSet's process — the probe, the per-container windows, /metrics.

Imports are kept to what the agent needs (no kubernetes client, no plotting, no click: its flags
are parsed with argparse, agent/options.py): its memory is part of the product. YAML is imported
only when a YAML config file is given.
"""

from __future__ import annotations

import os

# One thread until the capabilities are dropped (agent/privdrop.py: they are per thread) and
# the malloc arenas are limited (agent/malloc_tuning.py). numpy's OpenBLAS would start worker
# threads at import that keep root's capabilities; the agent does no BLAS work, so it gets
# none, whatever the environment says (also saves the threads' memory).
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

from runqscale.agent import errors  # noqa: E402
from runqscale.agent.options import PROG, AgentOptions, parse_agent_args  # noqa: E402

OPEN_FILES_WANTED = 1 << 16


def _raise_open_file_limit() -> None:
    """The soft RLIMIT_NOFILE up to the hard one (at most 65536; Go's runtime raises it to the
    hard one at start too): the agent keeps two cgroup files open per container
    (probes/cgroupfs.py, CpuStatReader) within half its soft limit, and a runtime's default of
    1024 would leave every container past the 256th on the slow path."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError):
            pass  # refused: CpuStatReader keeps within the soft limit it finds


def fail(message: str, usage: bool = False) -> NoReturn:
    errors.fail(message, usage, prog=PROG)


def _say(line: str) -> None:
    sys.stderr.write(f"{PROG}: {line}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """`python -m runqscale.agent [FLAGS]` (the DaemonSet's command) and `runqscale agent`."""
    try:
        run_agent(parse_agent_args(argv))
    except KeyboardInterrupt:  # before the signal handlers are in place: as every command
        sys.stderr.write(f"{PROG}: interrupted\n")
        sys.exit(130)


def run_agent(o: AgentOptions) -> None:
    """Node agent: measure run-queue latency per container and serve it on /metrics."""
    listen, interval, window, hierarchy = o.listen, o.interval, o.window, o.hierarchy
    pods_file, kubelet_url, apiserver_url = o.pods_file, o.kubelet_url, o.apiserver_url
    tls_cert, tls_key, auth_token_file, node_name = (o.tls_cert, o.tls_key, o.auth_token_file,
                                                     o.node_name)
    from runqscale.agent.cgroupwatch import WatchedCgroupIndex
    from runqscale.agent.daemon import Agent
    from runqscale.agent.malloc_tuning import fix_heap_thresholds, one_arena
    from runqscale.agent.pods import (
        SA_DIR,
        ApiServerPodSource,
        FilePodSource,
        HttpAuth,
        KubeletPodSource,
        PodSource,
        in_cluster_apiserver,
    )
    from runqscale.agent.sampler import Sampler
    from runqscale.exporter.server import MetricsServer, TokenFile, tls_context
    from runqscale.probes.cgroupfs import CgroupMounts
    from runqscale.probes.errors import ProbeError

    fix_heap_thresholds()  # the heap's free top goes back to the node (agent/malloc_tuning.py)
    one_arena()  # before any thread: threads share one heap's free memory
    _raise_open_file_limit()
    if window < interval:
        fail(f"--window {window:g}s is shorter than --interval {interval:g}s; make the window "
             "at least one interval (default 10s)", usage=True)
    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together; give both or neither", usage=True)
    mounts = CgroupMounts.read()
    try:
        _, root = mounts.choose(hierarchy)
    except ProbeError as e:
        fail(str(e), usage=True)
    for c in o.cgroups:
        if not os.path.isdir(os.path.join(root, c.lstrip("/"))):
            fail(f"--cgroup {c}: no such cgroup under {root}; give a path relative to that root",
                 usage=True)

    source = o.pods_source
    if source == "auto":
        source = ("file" if pods_file else "kubelet" if kubelet_url
                  else "apiserver" if (apiserver_url or in_cluster_apiserver()) else "none")
    sa_token = os.path.join(SA_DIR, "token")
    # Pod sources start their fetch threads when built: they are built after the capability
    # drop (see below), so only what they need is checked here.
    make_pods: Callable[[], PodSource]
    if source == "file":
        if not pods_file:
            fail("--pods-source file needs --pods-file FILE", usage=True)
        make_pods = partial(FilePodSource, pods_file)
    elif source == "kubelet":
        if not kubelet_url:
            fail("--pods-source kubelet needs --kubelet-url, e.g. https://$NODE_NAME:10250",
                 usage=True)
        tok = o.kubelet_token_file or (sa_token if os.path.exists(sa_token) else None)
        make_pods = partial(KubeletPodSource, kubelet_url,
                            HttpAuth(tok, o.kubelet_ca_file, o.kubelet_insecure_tls),
                            refresh=o.pods_refresh)
    elif source == "apiserver":
        url = apiserver_url or in_cluster_apiserver()
        if not url:
            fail("--pods-source apiserver needs --apiserver-url outside a cluster", usage=True)
        ca = os.path.join(SA_DIR, "ca.crt")
        make_pods = partial(ApiServerPodSource, url, node_name, HttpAuth(
            sa_token if os.path.exists(sa_token) else None, ca if os.path.exists(ca) else None))
    else:
        make_pods = PodSource

    token = None
    if auth_token_file:
        token = TokenFile(auth_token_file)
        try:
            token.token()
        except OSError as e:
            fail(f"--auth-token-file {auth_token_file}: {e.strerror}; put the token in the file",
                 usage=True)
        except ValueError as e:
            fail(f"--auth-token-file: {e}", usage=True)
    ctx = None
    if tls_cert and tls_key:
        try:
            ctx = tls_context(tls_cert, tls_key)
        except (OSError, ValueError) as e:
            fail(f"--tls-cert/--tls-key: cannot load ({e}); give a PEM certificate and its key",
                 usage=True)

    # Bind before loading the probe: a taken port fails in milliseconds, not after BPF load.
    # Serving starts after the capability drop, so no thread ever holds the load-time set.
    from runqscale.exporter.server import Registry

    registry = Registry()
    holder: dict[str, Agent] = {}
    try:
        server = MetricsServer(listen, registry, healthy=lambda: "a" in holder and
                               holder["a"].healthy(), ssl_context=ctx, token=token,
                               gzip=o.gzip)
    except OSError as e:
        fail(f"--listen {listen[0]}:{listen[1]}: {e.strerror}; pick a free port or address")

    try:
        probe, mounts, root = open_probe_for_agent(o.backend, hierarchy, o.max_cgroups, mounts)
    except ProbeError as e:
        server.server_close()
        fail(str(e))
    drop = drop_privileges(probe, root)
    _say(drop.line())
    pods = make_pods()
    # Learn cgroups as they are created, so short-lived ones resolve (see agent/cgroupwatch.py).
    index = WatchedCgroupIndex(root, retain=max(window, 3 * interval))
    sampler = Sampler(probe, mounts, root, only=list(o.cgroups) or None, read_cpu=False,
                      index=index)
    ag = Agent(sampler, pods, interval, window)
    server.on_scrape = _register(registry, ag, node_name, probe, server).record_scrape
    ag.step()
    holder["a"] = ag
    # Serve only now: a scrape during start-up waits in the listen backlog for the first sample
    # instead of getting an empty page.
    server.serve_in_thread()
    ready = _since_process_start()
    scheme = "https" if ctx else "http"
    host, port = server.server_address[:2]
    _say(f"serving {scheme}://{_fmt_host(host)}:{port}/metrics; backend "
         f"{probe.backend}, hierarchy {probe.hierarchy.value} at {root}, pods from "
         f"{pods.kind}, node {node_name}; first sample {ready:.3f}s after process start")
    ag.start()

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    ag.stop()
    server.shutdown()
    pods.close()
    sampler.index.close()
    probe.close()


def drop_privileges(probe: Any, root: str) -> Any:
    """After attach: keep no capability the kernel does not ask for (agent/privdrop.py)."""
    from runqscale.agent import privdrop

    checks = [privdrop.cgroupfs_check(root)]
    fd = getattr(probe, "_hists_fd", None)  # both backends read their histograms through it
    if isinstance(fd, int) and fd >= 0:
        checks.insert(0, privdrop.bpf_fd_check(fd))
    return privdrop.drop_after_attach(checks)


def open_probe_for_agent(backend: str, hierarchy: str, max_cgroups: int, mounts: Any) -> Any:
    from runqscale.probes.backends import open_probe

    return open_probe(backend, hierarchy, max_cgroups=max_cgroups, mounts=mounts, bpf_stats=True)


def _register(registry: Any, ag: Any, node: str, probe: Any, server: Any) -> Any:
    from runqscale import __version__
    from runqscale.exporter.collector import AgentCollector, BuildInfo
    from runqscale.exporter.process import ProcessCollector

    build = BuildInfo(__version__, probe.backend, os.uname().release, probe.hierarchy.value)
    collector = AgentCollector(ag.snapshot, node, build, server.refusals)
    registry.register(collector)
    registry.register(ProcessCollector())  # the agent's own CPU and memory: product features
    return collector


def _fmt_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _since_process_start() -> float:
    """Seconds since this process was started by the kernel (not since Python got going).
    Boot-relative on purpose (start ticks vs /proc/uptime): psutil's create_time() is wall
    clock, and the agent reads no wall clock (a clock step would skew the figure)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


if __name__ == "__main__":  # pragma: no cover
    main()
