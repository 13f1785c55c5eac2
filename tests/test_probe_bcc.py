"""The bcc backend on the real kernel, checked against the kernel's own per-task run-queue wait
(/proc/<pid>/task/<tid>/schedstat, 2nd field), in v1 `cpu` and v2 cgroups; plus its one-line
errors (no root needed for those)."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from runqscale.probes import bcc as bcc_mod
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.errors import ProbeError
from runqscale.probes.model import Hierarchy, ProbeReading
from runqscale.validation.sandbox import IDLE, PERIODIC, Group, Sandbox, thread_run_delay_ns

SECONDS = 3.0
# Only for the waker, whose waits are nothing but ~1500 timer wakeups on a CPU it has (almost) to
# itself: on Linux 6.18 /proc/<pid>/schedstat leaves out the ~10 us from such a wakeup to the
# switch-in, which wakeup-stamping programs (this one, and core's fallback path) count; the
# difference is measured at 10-15 us per wait, so the waker may differ by up to 30 us per wait.
WAKE_ALLOWANCE_NS = 30_000

# A process in the "waker" cgroup wakes one in the "waiter" cgroup through a FIFO every 2 ms, from
# another CPU. The waiter shares its CPU with hogs and works 0.3 ms per message, so it waits (and
# is preempted); the waker does not.
WAKER = (
    "import os, time\n"
    "fd = os.open({fifo!r}, os.O_WRONLY)\n"
    "while True:\n"
    "    os.write(fd, b'x')\n"
    "    time.sleep(0.002)\n"
)
WAITER = (
    "import os, time\n"
    "fd = os.open({fifo!r}, os.O_RDONLY)\n"
    "while os.read(fd, 1):\n"
    "    t = time.perf_counter()\n"
    "    while time.perf_counter() - t < 0.0003: pass\n"
)
# Starts a short-lived child every 20 ms (children exit long before the probe is read) and
# keeps the number started in a file.
SPAWNER = (
    "import os, subprocess, time\n"
    "n = 0\n"
    "while True:\n"
    "    subprocess.run(['/bin/true'])\n"
    "    n += 1\n"
    "    with open({counter!r} + '.tmp', 'w') as f: f.write(str(n))\n"
    "    os.replace({counter!r} + '.tmp', {counter!r})\n"
    "    time.sleep(0.02)\n"
)


def _open(hier: Hierarchy, **kw: object) -> bcc_mod.BccProbe:
    if os.geteuid() != 0:
        pytest.skip("needs root to compile BCC programs and create cgroups")
    mounts = CgroupMounts.read()
    root = mounts.v2 if hier is Hierarchy.V2 else mounts.v1_cpu
    if not root:
        pytest.skip(f"no {hier.value} cgroup hierarchy with a cpu controller mounted")
    try:
        return bcc_mod.BccProbe(hier, root, **kw)  # type: ignore[arg-type]
    except ProbeError as e:
        pytest.fail(f"bcc probe failed to load: {e}")


@pytest.fixture(params=[Hierarchy.V1_CPU, Hierarchy.V2], ids=["v1", "v2"])
def probe(request: pytest.FixtureRequest) -> Iterator[bcc_mod.BccProbe]:
    p = _open(request.param)
    try:
        yield p
    finally:
        p.close()


def _pin(g: Group, cpu: int) -> None:
    for pid in g.pids:
        os.sched_setaffinity(pid, {cpu})


def _ino(g: Group) -> int:
    return os.stat(g.dirs[0]).st_ino


def _measure(probe: bcc_mod.BccProbe, groups: list[Group], seconds: float
             ) -> tuple[dict[str, tuple[int, int, int]], ProbeReading, ProbeReading]:
    """Per group: (bpf wait ns, schedstat run_delay ns, bpf waits) over the same interval."""
    k0 = {g.name: thread_run_delay_ns(g.pids) for g in groups}
    r0 = probe.read()
    time.sleep(seconds)
    r1 = probe.read()
    k1 = {g.name: thread_run_delay_ns(g.pids) for g in groups}
    out = {}
    for g in groups:
        h1, h0 = r1.histograms.get(_ino(g)), r0.histograms.get(_ino(g))
        d = h1.minus(h0) if h1 else None
        kernel = sum(v - k0[g.name].get(t, 0) for t, v in k1[g.name].items())
        out[g.name] = (d.sum_ns if d else 0, kernel, d.count if d else 0)
    return out, r0, r1


@pytest.mark.kernel
@pytest.mark.bcc
def test_wait_sums_match_schedstat_and_go_to_the_waiting_cgroup(
        probe: bcc_mod.BccProbe) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs (waker and waiter on different CPUs)")
    busy_cpu, free_cpu = cpus[-1], cpus[0]
    with Sandbox(probe.hierarchy, name="rq-bcc") as sb, tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "wake")
        os.mkfifo(fifo)
        hogs, hog1 = sb.group("hogs"), sb.group("hog1")
        sb.spawn(hogs)
        sb.spawn(hogs)
        sb.spawn(hog1)
        light = sb.group("light")
        sb.spawn(light, code=PERIODIC.format(busy=0.0005, sleep=0.005))
        idle = sb.group("idle")
        sb.spawn(idle, code=IDLE)
        waiter, waker = sb.group("waiter"), sb.group("waker")
        sb.spawn(waiter, code=WAITER.format(fifo=fifo))
        sb.spawn(waker, code=WAKER.format(fifo=fifo))
        for g in (hogs, hog1, light, waiter):
            _pin(g, busy_cpu)  # three hogs, a light task and the waiter share one CPU
        _pin(waker, free_cpu)
        groups = [hogs, hog1, light, idle, waiter, waker]
        time.sleep(1.0)  # every process started, the FIFO opened at both ends
        rows, r0, r1 = _measure(probe, groups, SECONDS)
        alive = all(p.poll() is None for g in groups for p in g.procs)
    assert alive, "a workload process died during the measurement"
    report = "\n".join(f"{n}: bpf {b / 1e6:.2f} ms ({c} waits) vs schedstat {k / 1e6:.2f} ms"
                       for n, (b, k, c) in rows.items())
    bad = [n for n, (b, k, c) in rows.items()
           if abs(b - k) > max(0.10 * k, 1_000_000, WAKE_ALLOWANCE_NS * c * (n == "waker"))]
    assert not bad, f"{probe.hierarchy.value}: off by more than 10 % / 1 ms in {bad}:\n{report}"
    # The load is real: hogs and the waiter wait for the busy CPU, the idle sleeper does not.
    for n in ("hogs", "hog1", "light", "waiter"):
        assert rows[n][1] > 20e6, f"no contention for {n}:\n{report}"
    assert rows["idle"][2] <= 2, report
    # Attribution: the waiter's waits (it was woken by the waker every 2 ms) are the waiter's,
    # matched above against its own threads' schedstat; the waker got only its own.
    assert rows["waiter"][2] > 10, report
    assert rows["waker"][2] > 10, report
    # Self-counters: cumulative, and bpf_stats is on while the probe runs.
    assert r1.stats.events > r0.stats.events > 0
    assert r1.stats.bpf_run_count > r0.stats.bpf_run_count > 0
    assert r1.stats.bpf_run_time_ns > 0
    assert r1.stats.map_full == 0
    assert 0 < r1.stats.map_entries <= r1.stats.map_capacity


@pytest.mark.kernel
@pytest.mark.bcc
def test_v1_waits_of_processes_that_exit_between_reads_stay_in_their_cgroup(
        tmp_path: os.PathLike) -> None:
    probe = _open(Hierarchy.V1_CPU)
    counter = os.path.join(tmp_path, "children")
    try:
        cpu = max(os.sched_getaffinity(0))
        with Sandbox(Hierarchy.V1_CPU, name="rq-bcc-short") as sb:
            hog, spawner = sb.group("hog"), sb.group("spawner")
            sb.spawn(hog)
            proc = sb.spawn(spawner, code=SPAWNER.format(counter=counter))
            _pin(hog, cpu)
            _pin(spawner, cpu)  # children inherit the affinity, and wait behind the hog
            time.sleep(0.5)
            sid = _ino(spawner)
            pcount0, n0 = _arrivals(proc.pid), _children(counter)
            r0 = probe.read()
            time.sleep(2.0)
            os.kill(proc.pid, signal.SIGSTOP)  # no new children; the parent stays readable
            time.sleep(0.2)
            pcount1, n1 = _arrivals(proc.pid), _children(counter)
            r1 = probe.read()  # children that exited since r0 are folded now, unseen alive
            d = r1.histograms[sid].minus(r0.histograms.get(sid))
            os.kill(proc.pid, signal.SIGCONT)
            # Every child waits at least once (to run after fork) and none was alive at a read:
            # without the fork-time parent map these waits would be lost (no_cgroup).
            children, parent = n1 - n0, pcount1 - pcount0
            assert children > 30, f"only {children} children started"
            assert d.count >= parent + 0.9 * children, (d.count, parent, children)
            # Kernel entries of exited processes are folded, then deleted (white-box: the
            # per-process kernel map is this backend's own business).
            dead = [t for t in probe._hists.read() if not os.path.exists(f"/proc/{t}")]
            assert len(dead) <= 5, f"{len(dead)} entries of exited processes left in the map"
            ids = [_ino(hog), sid]
            sb.remove(hog)
            sb.remove(spawner)
            probe.read()  # folds their last waits and deletes their kernel entries
            probe.forget(ids)
            assert not set(ids) & probe.read().histograms.keys()
    finally:
        probe.close()


def _arrivals(pid: int) -> int:
    """Times the process's threads were switched in (3rd schedstat field): its waits that ended."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[2])
    return total


def _children(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read() or 0)
    except FileNotFoundError:
        return 0


@pytest.mark.kernel
@pytest.mark.bcc
def test_v2_map_full_is_counted_not_fatal() -> None:
    probe = _open(Hierarchy.V2, max_cgroups=2)
    try:
        with Sandbox(Hierarchy.V2, name="rq-bcc-full") as sb:
            for i in range(4):
                sb.spawn(sb.group(f"g{i}"), code=PERIODIC.format(busy=0.0002, sleep=0.002))
            time.sleep(1.0)
            r = probe.read()
    finally:
        probe.close()
    assert r.stats.map_full > 0
    assert len(r.histograms) <= 2 and r.stats.map_capacity == 2


# -- one-line errors (no root, no kernel needed) ---------------------------------------------


def _one_line(e: pytest.ExceptionInfo[ProbeError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_not_root_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ProbeError) as e:
        bcc_mod.check_preconditions()
    assert "root" in _one_line(e) and "sudo" in str(e.value)


def test_missing_headers_say_make_kernel_headers(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: os.PathLike) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    with pytest.raises(ProbeError) as e:
        bcc_mod.check_preconditions(release="9.9.9-test", modules_dir=str(tmp_path),
                                    kheaders=os.path.join(tmp_path, "none"))
    assert "make kernel-headers" in _one_line(e) and "9.9.9-test" in str(e.value)


def test_missing_tracefs_says_how_to_mount(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: os.PathLike) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    os.mkdir(os.path.join(tmp_path, "include"))
    with pytest.raises(ProbeError) as e:
        bcc_mod.check_preconditions(tracefs_dirs=(str(tmp_path),))
    assert "mount -t tracefs" in _one_line(e)


def test_bcc_not_importable_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bcc", None)  # makes `import bcc` raise ImportError
    with pytest.raises(ProbeError) as e:
        bcc_mod._import_bcc()
    assert "python3-bpfcc" in _one_line(e) and "--system-site-packages" in str(e.value)


def test_preempted_state_is_read_from_the_tracepoint_format() -> None:
    fmt = ('print fmt: "prev_state=%s%s", (REC->prev_state & ((((0x00000000 | 0x00000001 | '
           '0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) '
           '<< 1) - 1)) ? __print_flags(REC->prev_state & ((((0x00000000 | 0x00000001) + 1) << 1)'
           ' - 1), "|", { 0x00000001, "S" }) : "R", REC->prev_state & (((0x00000000 | 0x00000001'
           ' | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1)'
           ' << 1) ? "+" : ""')
    assert bcc_mod.task_report_max(fmt) == 0x100
    assert bcc_mod.task_report_max("garbage") == bcc_mod.TASK_REPORT_MAX_DEFAULT
    assert bcc_mod.task_report_max('REC->prev_state & (__import__) ? "+"') == 0x100
