"""Host heap policy for XLA:CPU train steps (glibc only; elsewhere both calls do nothing).

XLA:CPU allocates a computation's temporaries (1.1 GB per 512x256 train step) in one block and
frees it afterwards. Run on a worker thread, that block is a fresh mmap every step: ~370k page
faults, and on VMs that hand idle guest memory back to the host each one is also a host fault
(1-5 s of system time per step on 2-core KVM guests). `keep_temporaries_resident` runs
computations on the calling thread, where the block comes from the main malloc arena, and makes
that arena keep and reuse it. The price is that memory freed by one-off work (initialising the
state, compiling the step) also stays in the heap, fragmented, beside the step's block:
`release_freed` hands it back (malloc_trim), so call it after each such phase.
"""
from __future__ import annotations

import ctypes
import functools
import platform
from typing import Optional

import jax


@functools.lru_cache(maxsize=None)
def _glibc() -> Optional[ctypes.CDLL]:
    return ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None


def keep_temporaries_resident() -> bool:
    """On the CPU backend with glibc: run computations on the calling thread, and keep freed heap memory.

    Call it after jax.distributed set-up and before the first computation (the CPU client reads the
    dispatch setting when it starts); returns whether it applied.
    """
    libc = _glibc()
    if libc is None:
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    if jax.default_backend() != "cpu":
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>; a trim threshold of -1 disables trimming
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, -1))


def release_freed() -> bool:
    """Return the heap's free pages to the OS (glibc malloc_trim); whether any were returned."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
