"""tests/vm_hang.py's parsing, without a VM: the symbol table and the monitor's register dump
(the end-to-end path, a real guest killed at its timeout, is in tests/test_vm_kernel61.py)."""

from __future__ import annotations

from vm_hang import Symbols, _registers

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81000100 t helper
ffffffff81000200 D some_data
ffffffff81000300 T do_idle
ffffffff81000"""  # a copy cut short mid-line by the hang

REGISTERS = """\
CPU#0
EAX=00000000 EBX=00000000 ECX=00000000 EDX=00000000
ESI=00000000 EDI=00000000 EBP=00000000 ESP=00006ff0
EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0
CPU#1
RAX=0000000000000000 RBX=0000000000000001 RCX=0000000000000000 RDX=0000000000000000
RSI=0000000000000000 RDI=0000000000000000 RBP=ffffc90000087ef8 RSP=ffffc90000087ee8
RIP=ffffffff81000308 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
ES =0000 0000000000000000 00000000 00000000
"""


def test_symbols_name_text_addresses_and_skip_data_and_cut_lines() -> None:
    syms = Symbols(KALLSYMS)
    assert syms.names == ["_stext", "helper", "do_idle"]  # data and the cut line are not text
    assert syms.name(0xFFFFFFFF81000104) == "helper+0x4"
    assert syms.name(0xFFFFFFFF81000308) == "do_idle+0x8"
    assert syms.name(0xFFFFFFFF80FFFFFF) is None  # below the first symbol
    assert syms.name(0xFFFFFFFF81000300 + (1 << 20)) is None  # far past the last function
    assert Symbols("").name(0xFFFFFFFF81000000) is None


def test_registers_are_read_per_vcpu_in_32_and_64_bit_modes() -> None:
    cpus = _registers(REGISTERS)
    assert cpus == {0: {"ip": 0xFFF0, "sp": 0x6FF0},
                    1: {"ip": 0xFFFFFFFF81000308, "sp": 0xFFFFC90000087EE8}}
