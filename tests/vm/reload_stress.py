"""Run inside the test VM only (tests/vm_reload_stress.py boots it): load and unload the core
probe, alternating its two program sets, for SECONDS, beside two CPU hogs, a 1 ms sleeper and a
fork loop, so the scheduler keeps running through the tracepoint sites that every attach and
detach patches. Prints progress every 10 cycles and "reload-stress: done N" at the end.

    python tests/vm/reload_stress.py SECONDS
"""

from __future__ import annotations

import subprocess
import sys
import time

from runqscale.probes import core
from runqscale.probes.backends import open_probe
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.validation.sandbox import HOG

# The loader checks this path at each load: pointing it elsewhere forces the fallback set.
REAL_SCHED_INFO = core.SCHED_INFO


def main(seconds: float) -> int:
    py = sys.executable
    load = [subprocess.Popen([py, "-S", "-c", HOG]) for _ in range(2)]
    load.append(subprocess.Popen([py, "-S", "-c", "import time\nwhile True: time.sleep(0.001)"]))
    load.append(subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"]))
    t0, cycles = time.monotonic(), 0
    try:
        while time.monotonic() - t0 < seconds:
            cycles += 1
            # odd cycles the fast path (rq_switch), even ones the fallback (rq_wakeup,
            # rq_wakeup_new, rq_switch_stamped); both add rq_fork and the rq_seed iterator
            core.SCHED_INFO = REAL_SCHED_INFO if cycles % 2 else "/nonexistent/schedstat"
            probe, _, _ = open_probe("core", "v2", mounts=CgroupMounts.read())
            try:
                probe.read()
            finally:
                probe.close()
            if cycles % 10 == 0:
                print(f"reload-stress: {cycles} cycles in {time.monotonic() - t0:.0f} s",
                      flush=True)
    finally:
        for p in load:
            p.kill()
    print(f"reload-stress: done {cycles}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1])))
