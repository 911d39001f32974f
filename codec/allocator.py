"""How the process' C allocator treats the codec's large, short-lived CPU tensors.

A tile's networks allocate and free buffers of 1 to 100 MB many times per image (one per layer's
output, one per band step). glibc's malloc serves every block above its mmap threshold (128 KB,
adapting up to 32 MB) with a fresh mmap and unmaps it on free, so each buffer is page-faulted and
zeroed again by the kernel on every use, a share of an encode's time worth measuring (BENCHMARKS.md,
"the allocator"). Raising the threshold and keeping freed memory at the heap's top lets the next
image reuse the same pages.

What it costs: the setting is the process', not the codec's (a CPU `Codec` makes it, once). A process
keeps freed memory for its next images instead of returning it: up to KEEP_FREE at the heap's top,
and, as glibc returns only the top, whatever lies free below memory still in use, so a long-lived
process that codes images of many sizes can hold several hundred MB more than its current need.
Where that matters, or to keep the C library's defaults, set any of glibc's own knobs
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, GLIBC_TUNABLES): then the codec
leaves the allocator as the environment configured it. Other allocators preloaded in glibc's place
(LD_PRELOAD: jemalloc, tcmalloc) are left alone too; they cache freed memory themselves.
"""
from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
# Blocks above this still get their own mmap. 256 MB covers a 1024² tile's largest layer (100 MB);
# glibc before 2.27 refuses more than 32 MB, which is then used.
MMAP_THRESHOLDS = (256 << 20, 32 << 20)
KEEP_FREE = 512 << 20  # freed memory kept at the heap's top before it goes back to the system
TOP_PAD = 64 << 20  # the heap grows by at least this much at a time
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                  "GLIBC_TUNABLES")

_applied: bool | None = None  # the outcome, once tried


def keep_freed_memory() -> bool:
    """Set glibc's malloc, once per process, to reuse freed memory for the codec's large buffers
    instead of mapping fresh pages for each. Whether it did: False off glibc (musl, macOS, Windows),
    under another preloaded allocator, where the environment configures malloc itself, or where
    mallopt refuses."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(os.environ.get(name) for name in _USER_SETTINGS) or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # The threshold first: setting any parameter ends glibc's own adaptation of it.
    if not any(mallopt(_M_MMAP_THRESHOLD, size) == 1 for size in MMAP_THRESHOLDS):
        return False
    return mallopt(_M_TRIM_THRESHOLD, KEEP_FREE) == 1 and mallopt(_M_TOP_PAD, TOP_PAD) == 1
