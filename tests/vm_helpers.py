"""A second kernel for the tests: Debian's Linux 6.1 under qemu (TCG), pure cgroup v2.

This machine runs 6.18 with hybrid cgroups (the cpu controller bound to v1), so cgroup v2 quotas
(`cpu.max`, `cpu.stat` throttled_usec, `cpu.pressure`) and CO-RE on an older kernel cannot be
tested on it directly. The VM shares this machine's root read-only over virtio 9p, so it runs the
same worktree, venv and BPF object; tests/vm/init gives it tmpfs for /tmp, /run, /var/tmp and
/root, mounts cgroup2 (booted with cgroup_no_v1=all, the cpu controller enabled for children),
bpffs and tracefs, and runs one shell script. KVM is not used (`-enable-kvm` hangs on this
host): TCG is ~10x slower, so keep what runs inside short.

TCG runs both vCPUs in one host thread (`thread=single`), not one thread each (MTTCG, the
default). Under MTTCG, qemu 7.2 sometimes keeps executing a stale `int3` that the guest kernel
had written while patching its own text (static keys and static calls flip whenever a BPF
program attaches to or detaches from a tracepoint, or BPF run-time stats turn on or off): the
kernel sees its original instruction back in memory, rewinds to it (kprobe_int3_handler), and
the vCPU takes the same stale trap forever with interrupts off, while the other vCPU waits on
it (text_poke_bp_batch's IPI, a run-queue lock), or loops the same way. Load/unload loops of the
probe hung 4 of 4 boots within 30 cycles; single-threaded TCG 0 of 4 in 478 (stop 37, HISTORY.md).
On hardware the re-executed instruction is read from memory: an emulator fault, whose cause
inside qemu was not identified.

    vm = TestVM.build()                  # tests/vm/build.sh: cached in ~/.cache/runqscale/vm
    res = vm.run("uname -r", timeout=120)
    res.rc, res.console, res.seconds, res.out   # out: the run's writable share (host path)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import vm_hang

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "tests/vm/build.sh"
SHARE_IN_GUEST = "/run/runqscale-vm"  # where the guest sees a run's writable directory
MONITOR = "monitor.sock"  # qemu's human monitor (tests/vm_hang.py)
EXIT_MARKER = re.compile(r"^runqscale-vm: exit (\d+)\s*$", re.M)
# Booted with pure cgroup v2 (no v1 controller may be mounted anywhere), quiet, and a panic
# (init exiting) powers off instead of hanging: -no-reboot turns the reboot into qemu's exit.
# loglevel=5 and all-CPU backtraces: a soft lockup or RCU stall prints its call traces on the
# console (at loglevel 4 only the one-line headers appeared, which left a hang undiagnosable).
# SysRq is enabled for tests/vm_hang.py, which asks a hung guest for its backtraces.
CMDLINE = ("console=ttyS0 cgroup_no_v1=all panic=-1 quiet loglevel=5 "
           "softlockup_all_cpu_backtrace=1 sysrq_always_enabled")


@dataclass(frozen=True)
class VmResult:
    rc: int | None  # the command's exit code; None when the guest never reported one
    console: str  # everything the guest printed on its serial console
    seconds: float  # qemu's wall time, boot to power-off
    out: Path  # the run's share, as the host sees it
    hang: str = ""  # on a timeout, what each vCPU was doing (tests/vm_hang.py)


class VmError(RuntimeError):
    pass


@dataclass(frozen=True)
class TestVM:
    kernel_dir: Path  # vmlinuz, initramfs.gz, kernel.release (tests/vm/build.sh)
    cpus: int = 2
    memory_mib: int = 2048
    accel: str = "tcg,thread=single"  # see the module's docstring; "tcg,thread=multi" hangs

    __test__ = False  # not a pytest test class

    @classmethod
    def build(cls) -> TestVM:
        """Install what is missing and build the kernel + initramfs (cached); VmError if not."""
        if os.geteuid() != 0:
            raise VmError("the test VM needs root (apt-get, and qemu sharing / read-only)")
        res = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            raise VmError(f"tests/vm/build.sh failed ({res.returncode}): {res.stderr[-2000:]}")
        return cls(Path(res.stdout.strip().splitlines()[-1]))

    @property
    def release(self) -> str:
        return (self.kernel_dir / "kernel.release").read_text().strip()

    def command(self, share: Path, monitor: Path) -> list[str]:
        return [
            shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
            "-accel", self.accel,
            "-cpu", "max", "-smp", str(self.cpus), "-m", str(self.memory_mib),
            "-nodefaults", "-no-reboot", "-display", "none",
            "-monitor", f"unix:{monitor},server=on,wait=off",
            "-serial", "stdio",
            "-kernel", str(self.kernel_dir / "vmlinuz"),
            "-initrd", str(self.kernel_dir / "initramfs.gz"),
            "-append", f"{CMDLINE} runqscale_repo={REPO}",
            # multidevs=remap: / spans several host filesystems; keep their inodes apart
            "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,"
                       "multidevs=remap",
            "-virtfs", f"local,path={share},mount_tag=out,security_model=none",
            "-device", "virtio-rng-pci",
        ]

    def run(self, script: str, timeout: float = 600, share: Path | None = None) -> VmResult:
        """Boot, run `script` (sh, chrooted into this machine's root, cwd /) and power off.

        The script can write results into $RUNQSCALE_VM_OUT (the returned `out` on the host).
        On timeout qemu is killed and rc is None."""
        out = share or Path(tempfile.mkdtemp(prefix="runqscale-vm-"))
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("rc", "kallsyms", "hang.txt"):  # a reused share: not the last boot's
            (out / stale).unlink(missing_ok=True)
        hang = ""
        (out / "cmd.sh").write_text(
            "set -u\n"
            f"export RUNQSCALE_VM_OUT={SHARE_IN_GUEST} RUNQSCALE_VM_ACCEL='{self.accel}' "
            "HOME=/root "
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8\n"
            "cd /\n" + script + "\n")
        console = out / "console.log"
        t0 = time.monotonic()
        # the monitor's socket in a short private directory: a unix socket path has at most
        # 107 bytes, which a share under a long temporary directory would pass
        sock_dir = Path(tempfile.mkdtemp(prefix="rqvm-", dir="/tmp"))
        try:
            with open(console, "wb") as log:
                proc = subprocess.Popen(self.command(out, sock_dir / MONITOR),
                                        stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    try:
                        hang = vm_hang.report(sock_dir / MONITOR, out / "kallsyms")
                    except Exception as e:  # noqa: BLE001 - the report must not mask the timeout
                        hang = f"no vCPU report: {e!r}"
                    finally:
                        proc.kill()
                        proc.wait()
                    (out / "hang.txt").write_text(hang + "\n")
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
        seconds = time.monotonic() - t0
        text = console.read_text(errors="replace").replace("\r\n", "\n")
        rc: int | None = None
        if (out / "rc").exists():
            rc = int((out / "rc").read_text().strip())
        elif m := EXIT_MARKER.search(text):
            rc = int(m.group(1))
        return VmResult(rc, text, seconds, out, hang)
