"""Host disturbance per run (/proc/stat steal and busy time, /proc/pressure/cpu) and the fixed
exclusion rule."""

from __future__ import annotations

import os

import pytest

from runqscale.validation import host

STAT = "cpu  100 50 20 800 5 3 2 10 0 0\ncpu0 50 25 10 400 2 1 1 5 0 0\nintr 1\n"
PSI = "some avg10=12.50 avg60=3.00 avg300=1.00 total=4000000\nfull avg10=0 avg60=0 avg300=0 " \
      "total=0\n"


def test_parse_proc_stat_leaves_nice_idle_iowait_out_of_busy() -> None:
    assert host.parse_proc_stat(STAT) == (100 + 20 + 3 + 2, 10, 990)
    with pytest.raises(ValueError):
        host.parse_proc_stat("intr 1\n")


def test_parse_psi() -> None:
    assert host.parse_psi(PSI) == (4_000_000, 12.5)
    assert host.parse_psi("") is None


def test_disturbance_subtracts_the_sandbox_and_the_rule_names_the_reason() -> None:
    a = host.HostSnapshot(0.0, 0, 0, 0, 0, 1.0)
    b = host.HostSnapshot(10.0, 15 * host.CLK_TCK, 2 * host.CLK_TCK, 20 * host.CLK_TCK,
                          3_000_000, 40.0)
    d = host.disturbance(a, b, own_user_s=6.0, own_system_s=4.0)
    # niced, the benchmark's user time is in the nice column: only its system time is its own
    assert host.disturbance(a, b, 6.0, 4.0, own_niced=True)["foreign_cpu_cores"] == \
        pytest.approx(1.1)
    assert d["foreign_cpu_cores"] == pytest.approx(0.5)
    assert d["steal_ratio"] == pytest.approx(0.1)
    assert d["psi_some_ratio"] == pytest.approx(0.3)
    rule = host.ExclusionRule(max_foreign_cpu_cores=0.4, max_steal_ratio=0.05)
    assert rule.reason(d) == "foreign CPU 0.50 cores > 0.4; steal 10.0% > 5%"
    assert host.ExclusionRule(1.0, 0.2).reason(d) is None


def test_snapshot_reads_this_host() -> None:
    s = host.snapshot()
    assert s.all_jiffies > s.busy_jiffies > 0
    if os.path.exists("/proc/pressure/cpu"):
        assert s.psi_some_us is not None and s.psi_some_avg10 is not None


def test_own_cpu_reads_this_process() -> None:
    own = host.OwnCpu(None, v2=False)
    u0, s0 = own.read()
    sum(i * i for i in range(300_000))
    u1, s1 = own.read()
    assert u1 + s1 > u0 + s0
