"""The allocator setting a CPU Codec makes (codec/allocator.py): large buffers come from the heap,
not from fresh mmaps, unless the environment configures malloc itself. Each case runs in a fresh
process: the setting is the process'."""
import ctypes
import os
import platform
import subprocess
import sys

import pytest

from tng.codec.allocator import _USER_SETTINGS

glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
mallinfo2 = glibc and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")  # glibc >= 2.33
pytestmark = pytest.mark.skipif(not mallinfo2 or "malloc" in os.environ.get("LD_PRELOAD", ""),
                                reason="needs glibc's own malloc and mallinfo2")

# Makes a CPU Codec (nothing else touches the allocator), then allocates 64 MB, a size glibc's
# defaults serve with an mmap of its own, and prints whether the setting applied and how many
# blocks glibc had mapped on their own before and after.
_PROBE = """
import ctypes, torch
from tng.codec import Codec, allocator

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
Codec(device="cpu")
before = libc.mallinfo2().hblks
big = torch.empty(64 << 20, dtype=torch.uint8)
print(allocator._applied, before, libc.mallinfo2().hblks)
"""


def _probe(**env: str) -> tuple[str, int, int]:
    clean = {k: v for k, v in os.environ.items() if k not in _USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


def test_a_cpu_codec_serves_large_buffers_from_the_heap():
    applied, before, after = _probe()
    assert applied == "True" and after == before


def test_malloc_settings_of_the_environment_are_left_alone():
    applied, before, after = _probe(MALLOC_TOP_PAD_="0")
    assert applied == "False" and after == before + 1  # glibc's defaults: the 64 MB block is mapped on its own
