"""What a hung test VM was doing, read through qemu's monitor before it is killed.

A guest that deadlocks with interrupts off on every vCPU prints nothing (no soft-lockup or RCU
stall report can run), which left stop 34's one silent hang in the 6.1 VM test undiagnosable.
qemu still sees each vCPU's registers and memory: this reads every vCPU's instruction pointer and
the top of its stack, names the kernel text addresses in them with the guest's own symbol table
(tests/vm/init copies /proc/kallsyms into the run's share at boot), and asks the guest kernel for
its SysRq reports (all CPUs' and blocked tasks' backtraces), which reach the console when any
vCPU can still take an interrupt.
"""

from __future__ import annotations

import bisect
import re
import socket
import time
from pathlib import Path

PROMPT = b"(qemu) "
STACK_WORDS = 64  # 512 bytes from each vCPU's stack pointer
MAX_FUNCTION_BYTES = 64 * 1024  # an address further past a symbol is not in that function
_REG = re.compile(r"\b([RE]IP|[RE]SP)=([0-9a-f]+)")  # long mode: RIP/RSP; 32-bit: EIP/ESP
_HEX = re.compile(r"[0-9a-f]+")
_CPU = re.compile(r"^CPU#(\d+)", re.M)


def monitor(sock_path: Path, commands: list[str], timeout: float = 10.0) -> list[str]:
    """Each command's output from qemu's human monitor (HMP) at `sock_path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))

        def until_prompt() -> str:
            buf = b""
            while not buf.endswith(PROMPT):
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("qemu closed its monitor")
                buf += chunk
            return buf[: -len(PROMPT)].decode(errors="replace")

        until_prompt()  # the banner
        outputs = []
        for cmd in commands:
            s.sendall(cmd.encode() + b"\n")
            # HMP echoes the command line first; keep only what follows it
            outputs.append(until_prompt().split("\n", 1)[-1])
        return outputs


class Symbols:
    """Kernel text symbols from a /proc/kallsyms copy ("addr type name [module]" lines)."""

    def __init__(self, text: str) -> None:
        rows = sorted((int(f[0], 16), f[2]) for f in map(str.split, text.splitlines())
                      if len(f) >= 3 and f[1] in ("t", "T") and _HEX.fullmatch(f[0])
                      and int(f[0], 16))  # a copy cut short by the hang may end mid-line
        self.addrs = [a for a, _ in rows]
        self.names = [n for _, n in rows]

    def name(self, addr: int) -> str | None:
        i = bisect.bisect_right(self.addrs, addr) - 1
        off = addr - self.addrs[i] if i >= 0 else -1
        if not 0 <= off < MAX_FUNCTION_BYTES:  # data, stack or beyond the last function
            return None
        return f"{self.names[i]}+{off:#x}"


def _registers(text: str) -> dict[int, dict[str, int]]:
    """vCPU index -> {"ip", "sp"} from `info registers -a` (a block per "CPU#N")."""
    starts = [(m.start(), int(m.group(1))) for m in _CPU.finditer(text)]
    out = {}
    for (at, cpu), (end, _) in zip(starts, [*starts[1:], (len(text), -1)], strict=True):
        regs = {k[1:]: int(v, 16) for k, v in _REG.findall(text[at:end])}
        out[cpu] = {"ip": regs.get("IP"), "sp": regs.get("SP")}
    return out


def report(sock_path: Path, kallsyms: Path, console_wait: float = 3.0) -> str:
    """A few lines per vCPU: where it is and the kernel functions on its stack. The guest is
    stopped while its registers and stacks are read (under TCG a running vCPU's saved
    registers can lag its loop), then resumed to take the SysRq keys."""
    try:
        (regs,) = monitor(sock_path, ["stop", "info registers -a"])[1:]
        cpus = _registers(regs)
        with_sp = [i for i, r in sorted(cpus.items()) if r["sp"] is not None]
        dumps = monitor(sock_path, [c for i in with_sp for c in
                                    (f"cpu {i}", f"x/{STACK_WORDS}gx {cpus[i]['sp']:#x}")])
        stacks = dict(zip(with_sp, dumps[1::2], strict=True))
        monitor(sock_path, ["cont", "sendkey alt-sysrq-l", "sendkey alt-sysrq-w"])
        time.sleep(console_wait)  # the reports print on the console, if a vCPU takes the key
    except OSError as e:
        return f"qemu's monitor did not answer ({e}): no vCPU state"
    try:
        syms = Symbols(kallsyms.read_text(errors="replace")) if kallsyms.exists() else None
    except OSError:
        syms = None
    lines = [] if syms else [f"no {kallsyms.name} from the guest: addresses are not named"]
    for i, r in sorted(cpus.items()):
        ip = r["ip"]
        where = "an unknown address" if ip is None else (syms and syms.name(ip)) or f"{ip:#x}"
        lines.append(f"vCPU {i}: at {where}")
        words = [int(w, 16) for w in re.findall(r"0x([0-9a-f]{16})", stacks.get(i, ""))]
        if syms:
            called = [n for w in words if (n := syms.name(w))]
            lines.append("  on its stack: " + (" < ".join(called[:24]) or "no kernel text"))
    return "\n".join(lines)
