"""Least privilege after attach: drop every capability the running agent no longer needs.

Loading and attaching the probe needs CAP_BPF and CAP_PERFMON (and CAP_SYS_RESOURCE on kernels
before 5.11). Once the programs are attached and their links, maps and the bpf_stats fd are held
open, the rest of the agent's life is map reads and deletes through those fds, /proc/self/fdinfo,
cgroupfs reads and inotify: on kernels >= 6.5 none of that asks for a capability (the
`kernel.unprivileged_bpf_disabled` gate moved from every bpf() command to map and program
creation). Older kernels refuse bpf() on an existing map fd without CAP_BPF when that sysctl is
set, so the agent does not assume: it lowers its *effective* set to nothing (the permitted set
still allows raising it again), performs the operations it will need (a map key walk and a
delete of a key that never exists, a cgroupfs listing), and keeps CAP_BPF only if the kernel said
EPERM. Then permitted and inheritable are set to what is kept, the ambient set is cleared, the
bounding set is emptied where CAP_SETPCAP allows it (plain root; a Kubernetes container without
SETPCAP cannot shrink its bounding set, but with an empty permitted set and no_new_privs nothing
can be regained from it), and no_new_privs is set.

Capabilities are per thread: the caller must do this while the process has a single thread, so
every thread started afterwards inherits the reduced sets (`DropReport.threads` says how many
there were). Plain ctypes on libc; no dependency.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

CAP_SETPCAP, CAP_SYS_ADMIN, CAP_SYS_RESOURCE, CAP_PERFMON, CAP_BPF = 8, 21, 24, 38, 39
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 23, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4

NAMES = {0: "chown", 1: "dac_override", 2: "dac_read_search", 3: "fowner", 4: "fsetid",
         5: "kill", 6: "setgid", 7: "setuid", 8: "setpcap", 9: "linux_immutable",
         10: "net_bind_service", 11: "net_broadcast", 12: "net_admin", 13: "net_raw",
         14: "ipc_lock", 15: "ipc_owner", 16: "sys_module", 17: "sys_rawio", 18: "sys_chroot",
         19: "sys_ptrace", 20: "sys_pacct", 21: "sys_admin", 22: "sys_boot", 23: "sys_nice",
         24: "sys_resource", 25: "sys_time", 26: "sys_tty_config", 27: "mknod", 28: "lease",
         29: "audit_write", 30: "audit_control", 31: "setfcap", 32: "mac_override",
         33: "mac_admin", 34: "syslog", 35: "wake_alarm", 36: "block_suspend", 37: "audit_read",
         38: "perfmon", 39: "bpf", 40: "checkpoint_restore"}


# struct __user_cap_header_struct {u32 version; int pid} and two
# struct __user_cap_data_struct {u32 effective, permitted, inheritable} (low and high words);
# packed by hand: ctypes Structure classes cost the agent ~64 KB each in RSS.
_HEADER, _DATA = struct.Struct("<Ii"), struct.Struct("<6I")


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                                ctypes.c_ulong]
    return _libc


@dataclass(frozen=True)
class CapSets:
    effective: int
    permitted: int
    inheritable: int


def capget() -> CapSets:
    """This thread's capability sets."""
    hdr = ctypes.create_string_buffer(_HEADER.pack(_LINUX_CAPABILITY_VERSION_3, 0))
    data = ctypes.create_string_buffer(_DATA.size)
    if _lib().capget(hdr, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    e0, p0, i0, e1, p1, i1 = _DATA.unpack(data.raw)
    return CapSets(e0 | e1 << 32, p0 | p1 << 32, i0 | i1 << 32)


def capset(effective: int, permitted: int, inheritable: int = 0) -> None:
    """Set this thread's sets (the kernel allows lowering any, raising effective within
    permitted)."""
    hdr = ctypes.create_string_buffer(_HEADER.pack(_LINUX_CAPABILITY_VERSION_3, 0))
    lo, hi = 0xFFFFFFFF, 32
    data = ctypes.create_string_buffer(_DATA.pack(
        effective & lo, permitted & lo, inheritable & lo,
        effective >> hi & lo, permitted >> hi & lo, inheritable >> hi & lo))
    if _lib().capset(hdr, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _prctl(op: int, a: int = 0, b: int = 0) -> int:
    rc = _lib().prctl(op, a, b, 0, 0)
    return 0 if rc >= 0 else ctypes.get_errno() or errno.EINVAL


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(NAMES)


def bounding_set() -> int:
    out = 0
    for cap in range(last_cap() + 1):
        if _lib().prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1:
            out |= 1 << cap
    return out


def names(mask: int) -> str:
    caps = [NAMES.get(i, f"cap_{i}") for i in range(64) if mask >> i & 1]
    return ",".join(caps) or "none"


@dataclass(frozen=True)
class DropReport:
    before: CapSets
    after: CapSets
    bounding_before: int
    bounding_after: int
    no_new_privs: bool
    threads: int  # tasks in the process when the sets were changed (1: all covered)
    denied: str | None = None  # what the kernel refused without capabilities (kept: CAP_BPF)

    def line(self) -> str:
        kept = names(self.after.permitted)
        gone = self.before.permitted & ~self.after.permitted
        dropped = names(gone) if gone.bit_count() <= 8 else f"all {gone.bit_count()} others"
        msg = (f"capabilities after attach: kept {kept}, dropped {dropped}; bounding set "
               f"{names(self.bounding_after)}; no_new_privs {'on' if self.no_new_privs else 'off'}")
        if self.denied:
            msg += f" (CAP_BPF kept: without it the kernel refused {self.denied})"
        if self.threads > 1:
            msg += f"; warning: {self.threads} threads, only this one was changed"
        return msg


Check = Callable[[], str | None]  # None if fine, else what was refused


def bpf_fd_check(map_fd: int) -> Check:
    """The bpf() calls the agent makes after attach, on its own map fd: a key walk (reads) and
    a delete of key 0 (never a cgroup id: the kernel answers ENOENT when deletes are allowed)."""

    def check() -> str | None:
        from runqscale.probes.libbpf import LibBpf

        lib = LibBpf.load()
        key = ctypes.c_uint64(0)
        nxt = ctypes.c_uint64()
        for what, call in (("map reads", lambda: lib.bpf_map_get_next_key(
                                map_fd, None, ctypes.byref(nxt))),
                           ("map deletes", lambda: lib.bpf_map_delete_elem(
                                map_fd, ctypes.byref(key)))):
            ctypes.set_errno(0)
            if call() != 0 and ctypes.get_errno() in (errno.EPERM, errno.EACCES):
                return what
        return None

    return check


def cgroupfs_check(root: str) -> Check:
    def check() -> str | None:
        try:
            with os.scandir(root) as it:
                next(it, None)
        except PermissionError:
            return f"listing {root}"
        except OSError:
            pass  # not a privilege question
        return None

    return check


def drop_after_attach(checks: list[Check]) -> DropReport:
    """Keep no capability (CAP_BPF only if the kernel refuses the checks without it), clear
    ambient and inheritable, shrink the bounding set where allowed, set no_new_privs."""
    before = capget()
    bnd_before = bounding_set()
    threads = len(os.listdir("/proc/self/task"))

    def run_checks() -> str | None:
        for c in checks:
            why = c()
            if why:
                return why
        return None

    keep, denied = 0, None
    if before.permitted:
        capset(0, before.permitted, before.inheritable)  # effective off, permitted intact
        denied = run_checks()
        if denied:
            keep = before.permitted & (1 << CAP_BPF)
            capset(keep, before.permitted, before.inheritable)
            if not keep or run_checks():  # even CAP_BPF does not do: change nothing
                capset(before.effective, before.permitted, before.inheritable)
                keep = before.permitted
        if before.permitted >> CAP_SETPCAP & 1:
            capset(1 << CAP_SETPCAP | keep, before.permitted, 0)
            for cap in range(last_cap() + 1):
                if not keep >> cap & 1 and bnd_before >> cap & 1:
                    _prctl(PR_CAPBSET_DROP, cap)
        capset(keep, keep, 0)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    nnp = _prctl(PR_SET_NO_NEW_PRIVS, 1) == 0
    return DropReport(before, capget(), bnd_before, bounding_set(), nnp, threads, denied)
