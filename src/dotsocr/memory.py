"""Keeping a long batch's memory flat under glibc.

Page images are 4 to 15 MB each and come and go by the thousand. glibc raises its mmap
threshold after such blocks are freed, so later ones come from heaps that never shrink,
and every worker thread gets a heap of its own: a 1000-page run then holds hundreds of
MB it no longer uses (measured: 803 MB at 16 pages in flight, 483 MB with this).

The threshold is 4 MB: a grey page's buffers (3.7 MB at 200 DPI) are reused from the
heaps, a colour page's (11 to 15 MB) are mapped and given back. Measured with
bench/throughput.py (capacity 16, 300 pages, CPU seconds of the client): a 128 KB
threshold 28.9 s and 262 MB; 4 MB 24.6 s and 278 MB; 32 MB 19.1 s and 362 to 412 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 4 << 20, arenas: int = 2) -> bool:
    """Serve big blocks from mmap (given back on free) and cap the heaps; glibc only."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_ARENA_MAX, arenas)
        )
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
