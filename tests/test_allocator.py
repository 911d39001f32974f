"""The allocator setting a CPU Codec makes: large buffers come from the heap, not fresh mmaps."""
import ctypes
import platform

import pytest
import torch

from tng.codec import Codec
from tng.codec.allocator import MMAP_THRESHOLD, keep_freed_memory

glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mapped_blocks() -> int:
    """glibc's count of blocks it serves with their own mmap."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblks


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's")
def test_a_cpu_codec_serves_large_buffers_from_the_heap():
    Codec(device="cpu")
    assert keep_freed_memory()  # set, and idempotent
    before = _mapped_blocks()
    big = torch.empty(MMAP_THRESHOLD // 4, dtype=torch.uint8)  # 64 MB: glibc's default maps these on their own
    big.fill_(1)
    assert _mapped_blocks() == before
    del big
