"""Giving the C heap's free pages back to the system (glibc's malloc_trim).

A Python daemon frees most of what a sync or its start-up allocated, but
glibc keeps the pages of free chunks below the top of its heap resident:
some 1.7 MiB in a daemon just started (the .pyc data read while importing),
more after a large sync.  malloc_trim(0) returns every whole free page.
musl (OpenWrt's libc) returns free memory by itself and has no malloc_trim:
there, and on any libc without it, this does nothing.
"""

from __future__ import annotations

import ctypes

_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
if _trim is not None:
    _trim.argtypes = [ctypes.c_size_t]
    _trim.restype = ctypes.c_int


def release_free_heap() -> bool:
    """Return the C heap's free pages to the system; whether this libc can."""
    if _trim is None:
        return False
    _trim(0)
    return True
