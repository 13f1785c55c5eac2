"""The mapped slot reader (probes/maps.py MappedSlots) on a plain shared memory file laid out
as the probe's array is: CPU-major copies, summed per slot; and the CPU ids it is sized by."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runqscale.probes.maps import MappedSlots, possible_cpu_ids

WORDS = 5


def _mapped(values: np.ndarray) -> tuple[MappedSlots, int]:
    """A MappedSlots over a memfd holding `values` (cpu_ids, stride, WORDS)."""
    fd = os.memfd_create("slots")
    os.ftruncate(fd, -(-values.nbytes // mmap.PAGESIZE) * mmap.PAGESIZE)  # as the kernel maps
    os.pwrite(fd, values.astype(np.uint64).tobytes(), 0)
    return MappedSlots(fd, WORDS, values.shape[0], values.shape[1]), fd


@settings(max_examples=60, deadline=None)
@given(cpu_ids=st.integers(1, 5), stride=st.sampled_from([8, 16, 24]), data=st.data())
def test_each_slot_reads_as_the_sum_of_its_cpu_copies(cpu_ids: int, stride: int,
                                                      data: st.DataObject) -> None:
    values = np.array(data.draw(st.lists(st.integers(0, 2**40), min_size=cpu_ids * stride * WORDS,
                                         max_size=cpu_ids * stride * WORDS)),
                      dtype=np.uint64).reshape(cpu_ids, stride, WORDS)
    slots = np.array(data.draw(st.lists(st.integers(0, stride - 1), max_size=stride,
                                        unique=True)), dtype=np.int64)
    m, fd = _mapped(values)
    try:
        got = m.read(slots)
    finally:
        m.close()
        os.close(fd)
    assert got.shape == (len(slots), WORDS)
    np.testing.assert_array_equal(got, values.sum(axis=0, dtype=np.uint64)[slots])


def test_a_read_sees_the_kernel_side_writes_and_zero_clears_every_cpu_copy() -> None:
    values = np.zeros((2, 8, WORDS), dtype=np.uint64)
    m, fd = _mapped(values)
    try:
        # another writer of the same pages (the BPF side, here the file) is seen at once
        os.pwrite(fd, np.array([7], dtype=np.uint64).tobytes(), (1 * 8 + 3) * WORDS * 8)
        os.pwrite(fd, np.array([5], dtype=np.uint64).tobytes(), (0 * 8 + 3) * WORDS * 8)
        assert m.read(np.array([3]))[0, 0] == 12
        m.zero(3)
        assert not m.read(np.array([3, 0])).any()
        raw = np.frombuffer(os.pread(fd, values.nbytes, 0), dtype=np.uint64)
        assert not raw.any(), "zero() left a CPU's copy"
    finally:
        m.close()
        os.close(fd)


def test_a_read_after_close_is_an_error_not_a_crash() -> None:
    m, fd = _mapped(np.ones((1, 8, WORDS), dtype=np.uint64))
    m.close()
    os.close(fd)
    with pytest.raises(ValueError, match="after the probe was closed"):
        m.read(np.array([0]))


@pytest.mark.parametrize(("text", "ids"), [("0-1\n", 2), ("0\n", 1), ("0-3,8-11\n", 12),
                                           ("0,2,5\n", 6)])
def test_cpu_ids_are_the_highest_possible_id_plus_one(text: str, ids: int, tmp_path) -> None:
    p = tmp_path / "possible"
    p.write_text(text)
    assert possible_cpu_ids(str(p)) == ids
