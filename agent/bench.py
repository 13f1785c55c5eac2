"""Agent benchmark: memory and start-up next to bcc's runqlat, CPU and scrape time at 500 cgroups.

    python -m runqscale.agent.bench --out bench-agent.json

Needs root (BPF, cgroups). Measures the agent as the image installs it (agent/bench_install.py;
`--install here`: this environment's), on this machine:
- start: wall time from spawning `runqscale agent` to its /healthz answering 200 (first sample
  taken), and the agent's own "first sample N s after process start"; median of --starts runs;
- RSS of the agent after it has run with the 500 cgroups (VmRSS, and the peak VmHWM), and the
  floor under it: the RSS of a fresh interpreter after each group of the agent's imports;
- bcc's runqlat (`/usr/sbin/runqlat-bpfcc`): spawn to "Tracing..." (programs compiled and attached),
  and its RSS while tracing;
- with 500 live cgroups (one process, 500 threads, each in its own cgroup, waking twice a second,
  each a pod's container in the pod list a stand-in kubelet serves over HTTPS):
  the agent's CPU (utime+stime over --seconds, scraped every --scrape-every seconds as Prometheus
  would) and /metrics scrape time (client wall time, median and max of 10, and the agent's own
  scrape-duration gauge).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence

import psutil

from runqscale.ports import free_port

RUNQLAT = "/usr/sbin/runqlat-bpfcc"
# The bin directory of the install whose agent is measured (agent/bench_install.py: as the
# image installs it); None: this interpreter's environment (the development venv).
AGENT_BIN: str | None = None


def agent_python() -> str:
    return os.path.join(AGENT_BIN, "python") if AGENT_BIN else sys.executable


def agent_interpreter_flags() -> list[str]:
    """The interpreter flags the DaemonSet runs the agent with (deploy/base/
    agent-daemonset.yaml: `python3 <flags> -m runqscale.agent`); none for --install here."""
    if not AGENT_BIN:
        return []
    from runqscale.agent.bench_install import daemonset_interpreter_flags

    return daemonset_interpreter_flags()


def image_env() -> dict[str, str]:
    """The image's environment (Containerfile ENV), not this shell's: a PYTHONPATH,
    PYTHONOPTIMIZE, PYTHONMALLOC or MALLOC_* set here would change what is measured."""
    from runqscale.agent.bench_install import RUNTIME_ENV

    return {"PATH": f"{AGENT_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", **RUNTIME_ENV}


def memory_status(pid: int) -> dict[str, int]:
    """RSS now (psutil) and its peak: VmHWM, which psutil does not expose, from the kernel,
    with VmRSS's parts (RssAnon, RssFile, RssShmem); the part of the RSS that is BPF maps
    mapped into the process (the probe's slot array: kernel memory that exists whether the
    process maps it or not, counted in RssFile), and the RSS without it."""
    out = {"VmRSS": psutil.Process(pid).memory_info().rss, "BpfMapRss": _bpf_map_rss(pid)}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0]) * 1024
    out["RssWithoutBpfMaps"] = out["VmRSS"] - out["BpfMapRss"]
    return out


def _bpf_map_rss(pid: int) -> int:
    """Bytes of the RSS in mappings of BPF maps (`anon_inode:bpf-map` in smaps)."""
    total, in_map = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):  # a mapping's first line
                in_map = "bpf-map" in line
            elif in_map and head == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def interpreter_dirs(python: str | None = None) -> list[str]:
    """Where the agent's Python code and extension modules come from (`python`'s, else this
    interpreter's): the standard library and the environment's site-packages (numpy and its
    bundled OpenBLAS among them); a directory inside another listed one is left out (a venv's
    platstdlib holds its site-packages)."""
    if python is None:
        paths = sysconfig.get_paths()
    else:
        paths = json.loads(subprocess.run(
            [python, "-c", "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))"],
            capture_output=True, text=True, check=True).stdout)
    dirs = sorted({os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib",
                                                         "platlib") if os.path.isdir(paths[k])})
    return [d for d in dirs if not any(d.startswith(o + os.sep) for o in dirs if o != d)]


def evict_page_cache(dirs: Sequence[str], files: Sequence[str] = ()) -> int:
    """Drop the clean pages of every regular file under `dirs`, and of `files`, from the page
    cache (after a sync, so pages just written are clean); returns the files evicted. Pages a
    running process maps stay (this bench's own interpreter and libc among them). Why: pages a
    process maps count in its RSS, and how many of a library's pages a fault maps depends on
    how the page cache holds the file: on a fresh machine numpy's import cost 16.0 MB in the
    venv `make deps` had just built and 12.5 MB once its files were read back from disk
    (stop 42). Evicted, the agent's RSS no longer depends on the machine's history."""
    os.sync()
    n = 0

    def drop(path: str) -> None:
        nonlocal n
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        except OSError:
            pass  # a file system without page cache advice: nothing to drop
        finally:
            os.close(fd)

    for top in dirs:
        for root, _, names in os.walk(top):
            for name in names:
                path = os.path.join(root, name)
                if os.path.isfile(path):  # no FIFOs or devices (O_NOFOLLOW refuses links)
                    drop(path)
    for path in files:
        if os.path.isfile(path):
            drop(path)
    return n


def _cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


class Agent:
    def __init__(self, *args: str, interpreter_flags: list[str] | None = None,
                 module: list[str] | None = None) -> None:
        """`runqscale agent ARGS`; from an image install (AGENT_BIN) as the DaemonSet runs it,
        with `interpreter_flags` instead of the DaemonSet's if given, and `python -m MODULE...`
        instead of its module if given (e.g. ["runqscale.cli", "agent"])."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [shutil.which("runqscale") or os.path.join(os.path.dirname(sys.executable),
                                                         "runqscale"), "agent"]
        env = cwd = None
        if (interpreter_flags is not None or module is not None) and not AGENT_BIN:
            raise SystemExit("runqscale bench: error: interpreter flags are for the image's "
                             "install (--install image): this venv has no bytecode for them")
        if AGENT_BIN:
            # as the DaemonSet runs it: its command, the image's interpreter and environment
            flags = agent_interpreter_flags() if interpreter_flags is None else interpreter_flags
            from runqscale.agent.bench_install import AGENT_MODULE

            cmd = [agent_python(), *flags, *(AGENT_MODULE if module is None else ["-m", *module])]
            env, cwd = image_env(), "/"  # `-m`: no checkout on sys.path
        t0 = time.monotonic()
        self.proc = subprocess.Popen([*cmd, "--listen", f"127.0.0.1:{self.port}", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=cwd)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"agent exited: {self.proc.stderr.read()}")  # type: ignore
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.002)
        self.ready_wall = time.monotonic() - t0
        # the "serving ..." line follows the capability report (and any warnings)
        self.ready_self = None
        for _ in range(5):
            line = self.proc.stderr.readline()  # type: ignore[union-attr]
            if m := re.search(r"first sample ([0-9.]+)s after process start", line):
                self.ready_self = float(m.group(1))
            if m or not line or "serving" in line:
                break

    def scrape(self) -> tuple[float, str]:
        """One scrape as Prometheus makes it (`Accept-Encoding: gzip`; an agent that does not
        compress answers plain) and its wall time, up to the last byte received; the bytes
        received are kept in `wire_bytes`."""
        req = urllib.request.Request(self.url + "/metrics", headers={"Accept-Encoding": "gzip"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            zipped = r.headers.get("Content-Encoding") == "gzip"
        dt = time.perf_counter() - t0
        self.wire_bytes = len(raw)
        return dt, (gzip.decompress(raw) if zipped else raw).decode()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bench_start(n: int) -> dict:
    walls, selfs = [], []
    for _ in range(n):
        a = Agent()
        walls.append(a.ready_wall)
        if a.ready_self is not None:
            selfs.append(a.ready_self)
        a.stop()
        time.sleep(0.3)
    return {"start_to_first_sample_wall_seconds": statistics.median(walls),
            "start_to_first_sample_wall_all": walls,
            "start_to_first_sample_self_reported_seconds":
                statistics.median(selfs) if selfs else None}


def bench_runqlat() -> dict:
    if not os.access(RUNQLAT, os.X_OK):
        return {"error": f"{RUNQLAT} not installed (apt-get install bpfcc-tools)"}
    t0 = time.monotonic()
    p = subprocess.Popen([RUNQLAT, "1", "3"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    line = p.stdout.readline()  # type: ignore[union-attr]
    ready = time.monotonic() - t0
    if "Tracing" not in line:
        p.kill()
        return {"error": f"runqlat did not start: {line.strip()}"}
    time.sleep(1.5)
    st = memory_status(p.pid)
    p.wait(30)
    return {"start_to_tracing_seconds": ready, "rss_bytes": st.get("VmRSS"),
            "peak_rss_bytes": st.get("VmHWM")}


# One process, N threads, each moves itself into its own cgroup (v1 allows per-thread placement)
# and wakes every PERIOD seconds: N live cgroups with real waits at little CPU cost.
WORKER = r"""
import os, sys, threading, time
dirs = sys.argv[1:]
period = float(os.environ.get("PERIOD", "0.5"))
ready = threading.Barrier(len(dirs) + 1)
def run(group):
    tid = str(threading.get_native_id())
    for d in group.split(","):
        with open(os.path.join(d, "tasks"), "w") as f:
            f.write(tid)
    ready.wait()
    while True:
        time.sleep(period)
threading.stack_size(64 * 1024)
for g in dirs:
    threading.Thread(target=run, args=(g,), daemon=True).start()
ready.wait()
print("ready", flush=True)
time.sleep(1e6)
"""


def _pod_list(n: int) -> dict:
    """The pods of the bench's cgroups, as the kubelet would list them: on a node every
    container's labels resolve (and stay resolved), so the bench's should too."""
    return {"kind": "PodList", "apiVersion": "v1", "items": [
        {"metadata": {"name": f"bench-{i}", "namespace": "bench", "uid": _uid(i)},
         "spec": {"containers": [{"name": "main"}]},
         "status": {"containerStatuses": [{"name": "main",
                                           "containerID": f"containerd://{i:064x}"}]}}
        for i in range(n)]}


def _uid(i: int) -> str:
    return f"{i:08d}-0000-0000-0000-000000000000"


def self_signed_cert(cert: str, key: str) -> None:
    """A certificate for 127.0.0.1 (EC P-256, a day or two) and its key, with the openssl CLI:
    the stand-in kubelet's here, the agent's HTTPS endpoint's in the tests."""
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True,
                       text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        why = getattr(e, "stderr", "") or str(e)
        raise SystemExit(f"runqscale: error: making a self-signed certificate with openssl "
                         f"failed ({why.strip()[-200:]}); apt-get install openssl") from e


@contextlib.contextmanager
def kubelet_over_tls(pods_file: str) -> Iterator[list[str]]:
    """A stand-in kubelet serving `pods_file` as `GET /pods` over HTTPS (its own self-signed
    certificate, a bearer token), for as long as the block runs; yields the agent's flags to
    use it. On a node the agent fetches pods over TLS (the DaemonSet: from the API server), so
    its RSS includes OpenSSL (~4.6 MB with its library pages); a pods file would leave that
    out. The agent fetches once at start and again only for a pod it does not know (a long
    --pods-refresh): the DaemonSet's API-server watch, too, costs nothing while pods stay put,
    where a poll every 10 s would add a TLS handshake and a parse of the whole list."""
    import socketserver
    import ssl

    from runqscale.http1 import Handler, Request

    d = os.path.dirname(os.path.abspath(pods_file))
    cert, key, token = (os.path.join(d, n) for n in ("kubelet.crt", "kubelet.key", "token"))
    self_signed_cert(cert, key)
    with open(token, "w") as f:
        f.write("bench-token\n")

    class Pods(Handler):
        def get(self, req: Request) -> None:
            if req.path != "/pods" or req.header("authorization") != "Bearer bench-token":
                self.respond(401, b"{}")
                return
            with open(pods_file, "rb") as f:
                body = f.read()
            # chunked, as the kubelet sends it
            self.start(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
            self.write_chunks(body[i:i + 32768] for i in range(0, len(body), 32768))

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Pods)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield ["--pods-source", "kubelet", "--kubelet-url",
               f"https://127.0.0.1:{srv.server_address[1]}", "--kubelet-ca-file", cert,
               "--kubelet-token-file", token, "--pods-refresh", "1h"]
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def live_cgroups(n: int, pods_file: str) -> Iterator[list[str]]:
    """n live cgroups (WORKER's threads, one in each) named in `pods_file`, served as a kubelet
    lists them (kubelet_over_tls), for as long as the block runs; yields the agent's flags to
    fetch that list."""
    from runqscale.probes.model import Hierarchy
    from runqscale.scaler.actuators.cgroups import Sandbox

    with open(pods_file, "w") as f:
        json.dump(_pod_list(n), f)
    with Sandbox(Hierarchy.V1_CPU, name="rqs-bench") as sb, \
            kubelet_over_tls(pods_file) as pods_flags:
        groups = [sb.group(f"kubepods/burstable/pod{_uid(i)}/{i:064x}") for i in range(n)]
        worker = subprocess.Popen([sys.executable, "-S", "-c", WORKER,
                                   *(",".join(g.dirs) for g in groups)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            yield pods_flags
        finally:
            worker.kill()
            worker.wait()


def cpu_while_scraped(a: Agent, seconds: float, scrape_every: float
                      ) -> tuple[float, list[float], list[int]]:
    """The agent's CPU (fraction of a core) over `seconds`, scraped every `scrape_every`
    seconds as Prometheus would; each scrape's own CPU seconds; and the agent's RSS without
    the mapped BPF maps, read once a second over the second half (one reading moves by ~0.5 MB
    from one sampling interval to the next: their median is the figure to compare)."""
    c0, t0 = _cpu_seconds(a.proc.pid), time.monotonic()
    nxt, scrapes, rss, nxt_rss = t0, [], [], t0 + seconds / 2
    while time.monotonic() - t0 < seconds:
        if time.monotonic() >= nxt:
            c = _cpu_seconds(a.proc.pid)
            a.scrape()
            scrapes.append(_cpu_seconds(a.proc.pid) - c)
            nxt += scrape_every
        if time.monotonic() >= nxt_rss:
            rss.append(memory_status(a.proc.pid)["RssWithoutBpfMaps"])
            nxt_rss += 1.0
        time.sleep(0.05)
    cpu = (_cpu_seconds(a.proc.pid) - c0) / (time.monotonic() - t0)
    if not rss:  # a run too short for a reading inside it
        rss.append(memory_status(a.proc.pid)["RssWithoutBpfMaps"])
    return cpu, scrapes, rss


def bench_cgroups(n: int, seconds: float, scrape_every: float, pods_file: str) -> dict:
    with live_cgroups(n, pods_file) as pods_flags:
        a = Agent(*pods_flags)
        try:
            time.sleep(3)
            _, body = a.scrape()
            containers = _gauge(body, "runqscale_agent_containers")
            cpu, _, rss_samples = cpu_while_scraped(a, seconds, scrape_every)
            # with a scrape every second (a demanding Prometheus)
            c1, t1 = _cpu_seconds(a.proc.pid), time.monotonic()
            while time.monotonic() - t1 < 10:
                a.scrape()
                time.sleep(max(0.0, 1 - (time.monotonic() - t1) % 1))
            cpu_1s = (_cpu_seconds(a.proc.pid) - c1) / (time.monotonic() - t1)
            times, own, cpus, wire = [], [], [], []
            for _ in range(10):
                c_before = _cpu_seconds(a.proc.pid)
                dt, body = a.scrape()
                cpus.append(_cpu_seconds(a.proc.pid) - c_before)
                times.append(dt)
                wire.append(a.wire_bytes)
                own.append(_gauge(body, "runqscale_agent_scrape_duration_seconds"))
                time.sleep(0.2)
            st = memory_status(a.proc.pid)
            series = sum(1 for ln in body.splitlines() if ln and not ln.startswith("#"))
        finally:
            a.stop()
    return {"cgroups": n, "containers_exported": containers, "series": series,
            "cpu_core_fraction": cpu, "scrape_every_seconds": scrape_every,
            "cpu_core_fraction_scrape_every_1s": cpu_1s,
            "scrape_seconds_median": statistics.median(times), "scrape_seconds_max": max(times),
            "scrape_seconds_agent_gauge_median": statistics.median(own[1:]),
            "scrape_cpu_seconds_median": statistics.median(cpus),
            "scrape_wire_bytes_median": statistics.median(wire),
            "scrape_body_bytes": len(body.encode()),
            "rss_bytes": st["VmRSS"], "peak_rss_bytes": st["VmHWM"],
            "rss_bytes_without_bpf_maps": st["RssWithoutBpfMaps"],
            "rss_bytes_without_bpf_maps_median": statistics.median(rss_samples),
            "rss_samples_without_bpf_maps": rss_samples,
            "rss_anon_bytes": st["RssAnon"],
            "rss_file_bytes_without_bpf_maps": st["RssFile"] - st["BpfMapRss"]}


def _gauge(body: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+-]+)$", body, re.M)
    return float(m.group(1)) if m else float("nan")


# What the agent's imports alone cost, stage by stage in a fresh interpreter, in the order the
# agent needs them: the floor under its RSS before it has read a single cgroup.
IMPORT_STAGES = (
    ("interpreter", ()),
    ("socketserver, TLS (pods come over HTTPS), zlib", ("socketserver", "ssl", "zlib")),
    ("numpy", ("numpy",)),
    ("runqscale's agent modules", ("runqscale.agent.daemon_cmd",
                                   "runqscale.agent.pods", "runqscale.http1",
                                   "runqscale.agent.daemon", "runqscale.agent.cgroupwatch",
                                   "runqscale.agent.malloc_tuning", "runqscale.agent.privdrop",
                                   "runqscale.probes.core", "runqscale.exporter.server",
                                   "runqscale.exporter.collector", "runqscale.exporter.process")),
)
_IMPORT_CHILD = r"""
import importlib, json, sys
def rss():
    with open("/proc/self/status") as f:
        d = {k: int(v.split()[0]) * 1024 for k, _, v in (ln.partition(":") for ln in f)
             if k in ("VmRSS", "RssAnon", "RssFile")}
    return d
out = []
for name, modules in json.loads(sys.argv[1]):
    for m in modules:
        importlib.import_module(m)
    out.append({"stage": name, **rss()})
with open("/proc/self/maps") as f:  # the files the imports mapped (pathname: the 6th field)
    paths = {ln.split(None, 5)[5].strip() for ln in f if len(ln.split(None, 5)) == 6}
maps = sorted(p for p in paths if p.startswith("/") and not p.endswith("(deleted)"))
print(json.dumps({"stages": out, "maps": maps}))
"""


def evict_agent_files() -> dict:
    """Evict what the agent reads from disk at start (interpreter_dirs, and every file a fresh
    interpreter maps once it has the agent's imports: the interpreter, libc, OpenSSL, zlib,
    the extension modules), then read it back once with a fresh interpreter's imports: every
    later agent finds its files as a machine does after one earlier start, whatever wrote them
    before (returns the import floor that re-read them, and what was evicted)."""
    dirs, libs = interpreter_dirs(agent_python()), _import_child()["maps"]
    n = evict_page_cache(dirs, libs)
    return {"evicted_files": n, "dirs": dirs, "libraries": libs, "import_floor": import_floor()}


def _import_child() -> dict:
    """A fresh interpreter's RSS after each stage of IMPORT_STAGES, and the files it maps."""
    env = dict(image_env() if AGENT_BIN else os.environ,
               OPENBLAS_NUM_THREADS="1")  # as the agent sets it before numpy
    # cwd "/": `-c` puts the working directory first on sys.path, and a checkout's runqscale/
    # would shadow the install under test
    out = subprocess.run([agent_python(), *agent_interpreter_flags(), "-c", _IMPORT_CHILD,
                          json.dumps(IMPORT_STAGES)],
                         capture_output=True, text=True, check=True, env=env, cwd="/")
    return json.loads(out.stdout)


def import_floor() -> list[dict]:
    """RSS, anonymous and file-backed, after each stage of IMPORT_STAGES (cumulative)."""
    return _import_child()["stages"]


def idle_rss(pods_file: str) -> dict:
    """The agent with no container, fetching an empty pod list over TLS as on a node."""
    with open(pods_file, "w") as f:
        json.dump(_pod_list(0), f)
    with kubelet_over_tls(pods_file) as pods_flags:
        return _idle(Agent(*pods_flags))


def _idle(a: Agent) -> dict:
    try:
        time.sleep(5)
        a.scrape()
        st = memory_status(a.proc.pid)
    finally:
        a.stop()
    return {"rss_bytes": st["VmRSS"], "peak_rss_bytes": st["VmHWM"],
            "rss_bytes_without_bpf_maps": st["RssWithoutBpfMaps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--cgroups", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--scrape-every", type=float, default=15.0)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--install", choices=("image", "here"), default="image",
                    help="image: measure the agent installed as the image installs it (a plain "
                         "venv, pip install ., compiled; agent/bench_install.py); here: this "
                         "environment's (a development venv's start-up hooks included)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("runqscale.agent.bench: error: needs root (BPF and cgroups)")
    global AGENT_BIN
    if a.install == "image":
        from runqscale.agent.bench_install import image_install

        AGENT_BIN = image_install()
    res: dict = {"machine": {"kernel": os.uname().release, "cpus": os.cpu_count()},
                 "install": a.install, "agent_bin": AGENT_BIN or os.path.dirname(sys.executable)}

    def loadavg() -> float:
        return os.getloadavg()[0]

    res["machine"]["loadavg_at_start"] = loadavg()
    res["agent_start"] = bench_start(a.starts)  # libraries cached as found: starts are warm
    # The import floor as this machine's page cache holds the libraries now, then with them
    # evicted and read back from disk: every RSS figure below is taken in that state.
    res["agent_import_floor_as_found"] = import_floor()
    cache = evict_agent_files()
    res["agent_import_floor"] = cache.pop("import_floor")
    res["page_cache"] = cache
    with tempfile.TemporaryDirectory() as tmp:
        res["agent_idle"] = idle_rss(os.path.join(tmp, "pods.json"))
    res["runqlat_bpfcc"] = bench_runqlat()
    with tempfile.TemporaryDirectory() as tmp:
        res["agent_500_cgroups"] = bench_cgroups(a.cgroups, a.seconds, a.scrape_every,
                                                 os.path.join(tmp, "pods.json"))
    res["machine"]["loadavg_at_end"] = loadavg()
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    mb = 1 / (1 << 20)
    s, i, r, c = (res["agent_start"], res["agent_idle"], res["runqlat_bpfcc"],
                  res["agent_500_cgroups"])
    print(f"{'':34} {'agent':>12} {'runqlat-bpfcc':>14}  goal")
    first = s["start_to_first_sample_wall_seconds"]
    print(f"{'start to first sample / tracing':34} {first:11.3f}s "
          f"{r.get('start_to_tracing_seconds', float('nan')):13.3f}s  <= 0.3 s")
    print(f"{'RSS idle (peak)':34} {i['rss_bytes'] * mb:8.1f} MB "
          f"({i['peak_rss_bytes'] * mb:.1f}) {(r.get('rss_bytes') or 0) * mb:10.1f} MB  <= 40 MB")
    prev = 0
    print("  of which imports alone (a fresh interpreter, cumulative; as found before the")
    print("  libraries were evicted from the page cache in brackets):")
    for st, found in zip(res["agent_import_floor"], res["agent_import_floor_as_found"],
                         strict=True):
        print(f"{'  + ' + st['stage']:34} {st['VmRSS'] * mb:8.1f} MB "
              f"(+{(st['VmRSS'] - prev) * mb:.1f}) [{found['VmRSS'] * mb:.1f}]")
        prev = st["VmRSS"]
    print(f"{'RSS with 500 cgroups (peak)':34} {c['rss_bytes'] * mb:8.1f} MB "
          f"({c['peak_rss_bytes'] * mb:.1f})")
    print(f"{'  without BPF maps mapped in':34} "
          f"{c['rss_bytes_without_bpf_maps'] * mb:8.1f} MB "
          f"(idle {i['rss_bytes_without_bpf_maps'] * mb:.1f}): "
          f"{c['rss_anon_bytes'] * mb:.1f} anonymous, "
          f"{c['rss_file_bytes_without_bpf_maps'] * mb:.1f} file pages")
    print(f"{'    median over the CPU run':34} "
          f"{c['rss_bytes_without_bpf_maps_median'] * mb:8.1f} MB "
          f"(read every second over its second half)")
    every = f"CPU, 500 cgroups, scrape/{c['scrape_every_seconds']:g}s"
    print(f"{every:34} "
          f"{c['cpu_core_fraction'] * 100:10.2f} %  {'':14}  <= 0.5 % of a core")
    cpu1 = c["cpu_core_fraction_scrape_every_1s"] * 100
    print(f"{'CPU, 500 cgroups, scrape/1s':34} {cpu1:10.2f} %")
    print(f"{'scrape time, 500 cgroups (max)':34} {c['scrape_seconds_median'] * 1e3:9.1f} ms "
          f"({c['scrape_seconds_max'] * 1e3:.1f})  {'':8} <= 50 ms; {c['series']} series")
    print(f"{'scrape CPU time, 500 cgroups':34} {c['scrape_cpu_seconds_median'] * 1e3:9.1f} ms"
          f"  (wall time includes waiting for a CPU: load {res['machine']['loadavg_at_end']})")
    mb_body, mb_wire = c["scrape_body_bytes"] / 1e6, c["scrape_wire_bytes_median"] / 1e6
    print(f"{'  the body (on the wire)':34} {mb_body:9.2f} MB ({mb_wire:.2f} MB; the agent "
          f"compresses only with --gzip)")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
