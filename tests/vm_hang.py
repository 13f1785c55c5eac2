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
_REG = re.compile(r"\b(RIP|RSP)=([0-9a-f]{16})")


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
                    break
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
        rows = sorted((int(a, 16), n) for a, t, n, *_ in
                      (line.split() for line in text.splitlines() if line.count(" ") >= 2)
                      if t in "tT" and int(a, 16))
        self.addrs = [a for a, _ in rows]
        self.names = [n for _, n in rows]

    def name(self, addr: int) -> str | None:
        i = bisect.bisect_right(self.addrs, addr) - 1
        off = addr - self.addrs[i] if i >= 0 else -1
        if not 0 <= off < MAX_FUNCTION_BYTES:  # data, stack or beyond the last function
            return None
        return f"{self.names[i]}+{off:#x}"


def report(sock_path: Path, kallsyms: Path, console_wait: float = 3.0) -> str:
    """A few lines per vCPU: where it is and the kernel functions on its stack."""
    try:
        (regs,) = monitor(sock_path, ["info registers -a"])
        cpus = [dict(_REG.findall(block)) for block in regs.split("CPU#")[1:]]
        stacks = monitor(sock_path, [cmd for i, r in enumerate(cpus) if "RSP" in r
                                     for cmd in (f"cpu {i}", f"x/{STACK_WORDS}gx 0x{r['RSP']}")])
        monitor(sock_path, ["sendkey alt-sysrq-l", "sendkey alt-sysrq-w"])
        time.sleep(console_wait)  # the reports print on the console, if a vCPU takes the key
    except OSError as e:
        return f"qemu's monitor did not answer ({e}): no vCPU state"
    syms = Symbols(kallsyms.read_text()) if kallsyms.exists() else None
    lines = [] if syms else [f"no {kallsyms.name} from the guest: addresses are not named"]
    for i, r in enumerate(cpus):
        rip = int(r.get("RIP", "0"), 16)
        where = (syms.name(rip) if syms else None) or f"{rip:#x}"
        lines.append(f"vCPU {i}: at {where}")
        dump = stacks[2 * i + 1] if "RSP" in r and 2 * i + 1 < len(stacks) else ""
        words = [int(w, 16) for w in re.findall(r"0x([0-9a-f]{16})", dump)]
        if syms:
            called = [n for w in words if (n := syms.name(w))]
            lines.append("  on its stack: " + (" < ".join(called[:24]) or "no kernel text"))
    return "\n".join(lines)
