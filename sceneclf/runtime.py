"""Process-wide settings that must be in place before torch does any work; applied on import of
the package (`sceneclf/__init__.py`). A setting the user made in the environment is kept."""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Environment variables with which a user sets these thresholds themselves.
USER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                        "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def prefer_passive_openmp() -> None:
    """OpenMP threads that spin while waiting starve each other as soon as anything else runs on
    the machine (other workers, a browser, a test): measured here under load 6 on 2 cores, one
    epoch of the default CNN took 9.0 s with the default policy and 1.8 s with PASSIVE
    (bench/RESULTS.md). Must be set before torch loads its OpenMP runtime."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Let glibc's malloc keep freed tensor memory for the next batch instead of handing it back
    to the kernel. By default glibc serves each allocation above a (moving) threshold of at most
    32 MiB with its own mmap and returns the heap's free top above twice that, so every training
    step's activations arrive as fresh pages: 3,000-55,000 page faults per step here. Serving
    allocations up to `mmap_threshold` from the heap and trimming it only above `trim_threshold`
    brings that to tens, and a training step of the default CNN from 38-47 ms to 31-33 ms, of a
    (64, 128) CNN from 239-277 ms to 185-199 ms, for 10-80 MiB more peak memory (bench/RESULTS.md).
    PyTorch's CPU tuning guide makes the same point with jemalloc or tcmalloc; this needs neither.

    Returns whether the thresholds were set: not when the user set malloc's environment variables,
    nor on a C library without glibc's `mallopt`."""
    if not sys.platform.startswith("linux") or any(k in os.environ for k in USER_MALLOC_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) & bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
