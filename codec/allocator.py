"""How the process' C allocator treats the codec's large, short-lived CPU tensors.

A tile's networks allocate and free buffers of 1 to 100 MB many times per image (one per layer's
output, one per band step). glibc's malloc serves every block above its mmap threshold (128 KB,
adapting up to 32 MB) with a fresh mmap and unmaps it on free, so each buffer is page-faulted and
zeroed again by the kernel on every use, a share of an encode's time worth measuring (BENCHMARKS.md,
"the allocator"). Raising the threshold and keeping freed memory at the heap's top lets the next
image reuse the same pages. Peak memory stays what the largest image needs; a process keeps up to
KEEP_FREE bytes of freed memory for its next images instead of returning them at once.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 256 << 20  # blocks above this (a 1024² tile's largest layer is 100 MB) still get their own mmap
KEEP_FREE = 512 << 20  # freed memory kept at the heap's top before it goes back to the system
TOP_PAD = 64 << 20  # the heap grows by at least this much at a time

_done = False


def keep_freed_memory() -> bool:
    """Set glibc's malloc, once per process, to reuse freed memory for the codec's large buffers
    instead of mapping fresh pages for each. Whether it applies: False off glibc (musl, macOS, Windows),
    or where mallopt refuses. Other allocators preloaded in place of glibc's (jemalloc, tcmalloc) are
    untouched, as their own caching does the same."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(libc.mallopt(p, v) == 1 for p, v in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                                        (_M_TRIM_THRESHOLD, KEEP_FREE), (_M_TOP_PAD, TOP_PAD)))
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
