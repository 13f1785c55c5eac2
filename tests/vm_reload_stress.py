"""Does the 6.1 test VM survive the probe being loaded and unloaded again and again?

A diagnostic, not a test (pytest does not collect it): it boots the VM of tests/vm_helpers.py
BOOTS times and runs tests/vm/reload_stress.py in each for SECONDS, then prints one line per boot
(cycles done, or where each vCPU was when it hung) and a total. `--mttcg` runs qemu's default
multi-threaded TCG instead of the harness's single thread, which is how stop 37 showed that the
guest's hangs came from the emulator (tests/vm_helpers.py's docstring):

    python tests/vm_reload_stress.py --boots 3 --seconds 200 [--mttcg]   # as root, ~4 min a boot
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from vm_helpers import REPO, TestVM

DONE = re.compile(r"^reload-stress: done (\d+)$", re.M)
PROGRESS = re.compile(r"^reload-stress: (\d+) cycles", re.M)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--boots", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=200)
    ap.add_argument("--mttcg", action="store_true", help="qemu's multi-threaded TCG")
    args = ap.parse_args()
    vm = TestVM.build()
    if args.mttcg:  # one host thread per vCPU; qemu errors out rather than fall back
        vm = replace(vm, accel="tcg,thread=multi")
    hung = failed = cycles_total = 0
    for i in range(args.boots):
        share = Path(tempfile.mkdtemp(prefix="runqscale-reload-"))
        res = vm.run(f"cd {shlex.quote(str(REPO))}\n"
                     f".venv/bin/python tests/vm/reload_stress.py {args.seconds}",
                     timeout=args.seconds + 150, share=share)
        done = DONE.search(res.console)
        seen = [int(n) for n in PROGRESS.findall(res.console)]
        cycles = int(done.group(1)) if done else max(seen, default=0)
        cycles_total += cycles
        if res.rc is None:  # killed at the timeout: the hang report says where each vCPU was
            hung += 1
            print(f"boot {i + 1}: HUNG after {cycles}+ cycles ({share})\n{res.hang}", flush=True)
        elif done and res.rc == 0:
            print(f"boot {i + 1}: {cycles} cycles, no hang ({res.seconds:.0f} s)", flush=True)
        else:
            failed += 1
            print(f"boot {i + 1}: FAILED with exit {res.rc} after {cycles} cycles ({share}):\n"
                  f"{res.console[-2000:]}", flush=True)
    mode = "multi-threaded TCG" if args.mttcg else "single-threaded TCG"
    print(f"{mode}: {hung} of {args.boots} boots hung, {failed} failed; "
          f"{cycles_total} load/unload cycles")
    return 1 if hung or failed else 0


if __name__ == "__main__":
    sys.exit(main())
