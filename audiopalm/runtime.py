"""Process settings that every audiopalm command applies first: how the C allocator keeps freed memory.

glibc's malloc serves each allocation above a threshold (dynamic, at most 32 MiB) with its own ``mmap`` and hands it
back to the kernel when it is freed, and trims the heap's free top back to the kernel too. A training step allocates
and frees the same large tensors every step (the logits, their softmax and gradients: 36 MB each on the demo's
fine-tune), so each step the kernel maps and zeroes them anew: on the demo's fine-tune a quarter of its CPU time was
spent in the kernel (docs/benchmarks.md). :func:`keep_freed_memory` serves every allocation from the heap and keeps
freed memory for the next step (the heap's free top goes back to the kernel only above :data:`KEEP_BYTES`), so a
process's resident size stays near its peak; no number a model computes changes (the fine-tune's weights are equal
bit for bit). ``AUDIOPALM_MALLOC=system`` keeps glibc's defaults; another C library is left as is.
"""

from __future__ import annotations

import ctypes
import os

MALLOC_ENV = "AUDIOPALM_MALLOC"
"""Environment variable: ``system`` leaves the C allocator's settings as they are."""
KEEP_BYTES = 1 << 30
"""Free memory at the heap's top that is kept for later allocations instead of being trimmed (1 GiB)."""
# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def glibc_version() -> str | None:
    """``"glibc 2.36"``, or None when this process's C library is not glibc."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (no ``mmap`` per large allocation, heap trimmed only above
    :data:`KEEP_BYTES` free); True when applied, False under another C library or ``AUDIOPALM_MALLOC=system``."""
    if os.environ.get(MALLOC_ENV, "").strip().lower() == "system" or glibc_version() is None:
        return False
    libc = ctypes.CDLL(None)  # the C library this process runs on
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
