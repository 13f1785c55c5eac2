"""Does the 6.1 test VM survive the probe being loaded and unloaded again and again?

A diagnostic, not a test (pytest does not collect it): it boots the VM of tests/vm_helpers.py
BOOTS times and runs tests/vm/reload_stress.py in each for SECONDS, then prints one line per boot
(cycles done, or where each vCPU was when it hung) and a total. `--mttcg` runs qemu's default
multi-threaded TCG instead of the harness's single thread, which is how stop 37 showed that the
guest's hangs came from the emulator (tests/vm_helpers.py's docstring):

    python tests/vm_reload_stress.py --boots 3 --seconds 200 [--mttcg]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from vm_helpers import REPO, TestVM

DONE = re.compile(r"^reload-stress: done (\d+)$", re.M)
PROGRESS = re.compile(r"^reload-stress: (\d+) cycles", re.M)


class MultiThreadedVM(TestVM):
    def command(self, share: Path, monitor: Path) -> list[str]:
        cmd = super().command(share, monitor)
        cmd[cmd.index("-accel") + 1] = "tcg"  # qemu's default: one host thread per vCPU
        return cmd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--boots", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=200)
    ap.add_argument("--mttcg", action="store_true", help="qemu's multi-threaded TCG")
    args = ap.parse_args()
    built = TestVM.build()
    vm = MultiThreadedVM(built.kernel_dir) if args.mttcg else built
    hung = cycles_total = 0
    for i in range(args.boots):
        share = Path(tempfile.mkdtemp(prefix="runqscale-reload-"))
        res = vm.run(f"cd {REPO}\n.venv/bin/python tests/vm/reload_stress.py {args.seconds}",
                     timeout=args.seconds + 150, share=share)
        done = DONE.search(res.console)
        seen = [int(n) for n in PROGRESS.findall(res.console)]
        cycles = int(done.group(1)) if done else max(seen, default=0)
        cycles_total += cycles
        if done and res.rc == 0:
            print(f"boot {i + 1}: {cycles} cycles, no hang ({res.seconds:.0f} s)", flush=True)
        else:
            hung += 1
            print(f"boot {i + 1}: HUNG after {cycles}+ cycles (exit {res.rc}; {share})\n"
                  f"{res.hang}", flush=True)
    mode = "multi-threaded TCG" if args.mttcg else "single-threaded TCG"
    print(f"{mode}: {hung} of {args.boots} boots hung; {cycles_total} load/unload cycles")
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
