"""glibc's malloc told to keep freed memory for reuse, before JAX starts.

XLA's CPU backend allocates a step's temporaries afresh on every run, as one block (850 MB
for the GPT-2 small step at 4 x 128). glibc serves a block that large with a new `mmap`
and unmaps it when it is freed, so each step touches every page of it anew: about 200,000
minor page faults and 0.3-0.5 s of kernel time a step on a 2-core host, with the zeroing
of each page on the step's critical path. Kept in the heap instead, the block is reused:
after the heap has grown for the first few steps (until freed blocks coalesce into a
stretch that fits the next one), steps take no faults (`tests/test_host_memory.py`).

Three settings do it, and all three are needed:
  - one arena (`M_ARENA_MAX`): XLA allocates from its worker threads, and a thread's own
    arena cannot grow past 64 MB, so glibc would fall back to `mmap` for the block;
  - no `mmap` for large blocks (`M_MMAP_MAX` 0): they come from the heap;
  - no trimming (`M_TRIM_THRESHOLD` -1): freed memory at the heap's top is kept, not
    returned to the kernel (a finite threshold let the faults return once the heap's free
    top outgrew it).
The cost: the process keeps its peak heap until it exits, and every thread allocates from
one arena. A training process reaches its peak in the first steps and then reuses it.

`LMSCALE_KEEP_FREED_MEMORY=0` in the environment leaves glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

OPT_OUT = "LMSCALE_KEEP_FREED_MEMORY"
# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
# The same settings for a process started with this as its environment's GLIBC_TUNABLES
# (a trim threshold of 2**62 bytes: never reached).
GLIBC_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                  f"glibc.malloc.trim_threshold={2**62}")


def keep_freed_memory() -> bool:
    """Apply the three settings; True when glibc took them all. False, changing nothing,
    on a C library other than glibc, or when `LMSCALE_KEEP_FREED_MEMORY=0`.

    Call it before JAX is imported: a thread that has allocated already keeps its arena."""
    if os.environ.get(OPT_OUT, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others have no mallopt knobs
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
