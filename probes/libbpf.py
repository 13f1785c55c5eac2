"""A minimal ctypes binding to the system's libbpf (Debian libbpf1): open, configure, load and
attach a CO-RE object, and read its maps. No compiler or kernel headers at run time."""

from __future__ import annotations

import ctypes
import errno
import os
from collections import deque

from runqscale.probes.errors import ProbeError

c_void_p, c_int, c_char_p, c_uint32, c_size_t = (
    ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_size_t)

_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
BPF_STATS_RUN_TIME = 0

# dlopen's own search, by soname: ctypes.util.find_library would run `ldconfig -p` in a child
# and costs the agent ~0.6 MB of imports (subprocess, shutil, tempfile) it needs nowhere else.
LIBBPF_NAMES = ("libbpf.so.1", "libbpf.so.0", "libbpf.so")


def _open_libbpf() -> ctypes.CDLL:
    first: OSError | None = None
    for name in LIBBPF_NAMES:
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            first = first or e
    from ctypes.util import find_library  # an unusual install: ask ldconfig where it is

    found = find_library("bpf")
    try:
        if found:
            return ctypes.CDLL(found, use_errno=True)
    except OSError as e:
        first = e
    raise ProbeError(f"libbpf not found ({first}); install it (Debian: apt-get install libbpf1)")


class LibBpf:
    """The handful of libbpf calls runqscale needs, with libbpf's own messages kept for errors."""

    _lib: ctypes.CDLL | None = None

    def __init__(self) -> None:
        self.lib = self.load()
        self.messages: deque[str] = deque(maxlen=40)
        libc = ctypes.CDLL(None, use_errno=True)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]

        def on_print(level: int, fmt: bytes, args: int) -> int:
            buf = ctypes.create_string_buffer(512)
            vsnprintf(buf, 512, fmt, args)  # x86-64 va_list decays to a pointer
            text = buf.value.decode(errors="replace").strip()
            if text:
                self.messages.append(text)
            return 0

        self._print_cb = _PRINT_FN(on_print)  # keep a reference for libbpf's lifetime
        self.lib.libbpf_set_print(self._print_cb)

    @classmethod
    def load(cls) -> ctypes.CDLL:
        """The library with argument types set; usable without an instance (map reads)."""
        if cls._lib is None:
            lib = _open_libbpf()
            sig = {
                "libbpf_set_print": (c_void_p, [_PRINT_FN]),
                "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
                "bpf_object__load": (c_int, [c_void_p]),
                "bpf_object__close": (None, [c_void_p]),
                "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
                "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
                "bpf_map__name": (c_char_p, [c_void_p]),
                "bpf_map__fd": (c_int, [c_void_p]),
                "bpf_map__initial_value": (c_void_p, [c_void_p, ctypes.POINTER(c_size_t)]),
                "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
                "bpf_map__max_entries": (c_uint32, [c_void_p]),
                "bpf_map__type": (c_int, [c_void_p]),
                "bpf_program__name": (c_char_p, [c_void_p]),
                "bpf_program__fd": (c_int, [c_void_p]),
                "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
                "bpf_program__attach": (c_void_p, [c_void_p]),
                "bpf_link__destroy": (c_int, [c_void_p]),
                "bpf_link__fd": (c_int, [c_void_p]),
                "bpf_iter_create": (c_int, [c_int]),
                "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
                "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
                "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
                "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
                "bpf_map_lookup_batch": (
                    c_int, [c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                            ctypes.POINTER(c_uint32), c_void_p]),
                "bpf_enable_stats": (c_int, [c_int]),
                "libbpf_num_possible_cpus": (c_int, []),
            }
            for fn, (res, args) in sig.items():
                f = getattr(lib, fn)
                f.restype, f.argtypes = res, args
            cls._lib = lib
        return cls._lib

    def last_message(self) -> str:
        return self.messages[-1] if self.messages else ""

    @staticmethod
    def errno() -> int:
        return ctypes.get_errno()

    def iter_maps(self, obj: int):
        m = self.lib.bpf_object__next_map(obj, None)
        while m:
            yield m, self.lib.bpf_map__name(m).decode()
            m = self.lib.bpf_object__next_map(obj, m)

    def iter_programs(self, obj: int):
        p = self.lib.bpf_object__next_program(obj, None)
        while p:
            yield p, self.lib.bpf_program__name(p).decode()
            p = self.lib.bpf_object__next_program(obj, p)


def explain_load_failure(err: int, detail: str) -> ProbeError:
    """Turn a failed bpf_object__load into the one line a user can act on."""
    if err in (errno.EPERM, errno.EACCES):
        who = "not root" if os.geteuid() != 0 else "root, but the kernel refused"
        return ProbeError(
            f"loading BPF programs was refused ({who}; {os.strerror(err)}): run as root or with "
            "CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE, and check kernel.unprivileged_bpf_disabled"
            " / lockdown"
        )
    if err == errno.ENOMEM:
        return ProbeError(
            "BPF map allocation failed (ENOMEM): raise RLIMIT_MEMLOCK (ulimit -l unlimited) or "
            "lower --max-cgroups"
        )
    return ProbeError(f"BPF load failed: {os.strerror(err)}: {detail or 'see dmesg'}")
