"""glibc's malloc told to keep the memory it has, set once when pss_tf is imported.

TensorFlow on CPU takes every tensor from the C library's malloc. glibc hands
blocks above its mmap threshold (128 KiB at first, at most 32 MiB as it adapts)
straight from the kernel and gives them back on free, and it returns the top of
its heaps to the kernel beyond 128 KiB free. A training step allocates and frees
the same few hundred megabytes of activations and gradients every step, so every
step pays to fault those pages in again (the Fashion-MNIST run of the README
spent 40% of its CPU time in the kernel). Keeping blocks up to 32 MiB in the
heaps, and trimming a heap only when 2 GiB lie free at its top (in effect never),
turns those faults into reuse.

The settings are applied through `mallopt` (ctypes), before TensorFlow allocates
when pss_tf is imported first and still in effect for every later allocation when
it is not. Nothing is done off glibc, for any setting the user chose through
glibc's own environment variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
`MALLOC_TOP_PAD_`, `MALLOC_ARENA_MAX`, or `GLIBC_TUNABLES`), or when
`PSS_TF_MALLOC_TUNING=0` (glibc's defaults, e.g. to measure them).

TensorFlow itself sets a fixed 128 KiB mmap threshold the first time a process
builds a GeneratorDataset kernel (its workaround for `from_generator`'s memory
under Python 3.11); tf.distribute's multi-device iterator, which feeds every
training step, builds one. Every block above 128 KiB then comes fresh from the
kernel: on a CPU where TensorFlow's own (Eigen) kernels run, most of a step's
tensors. `keep_freed_memory(again=True)` after such an iterator is made puts
these settings back; TensorFlow applies its patch only once per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

OPT_OUT_VARIABLE = "PSS_TF_MALLOC_TUNING"

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

# (mallopt parameter, glibc's own variable that sets it, tunable name, value).
# 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems. The trim
# threshold is meant as "never trim"; mallopt takes a C int, so the largest one it
# can set is 2**31 - 1 bytes (2 GiB less a byte), far above the few hundred megabytes
# a training step frees.
SETTINGS = (
    (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold", 32 * 1024 * 1024),
    (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold", 2**31 - 1),
    (M_TOP_PAD, "MALLOC_TOP_PAD_", "glibc.malloc.top_pad", 256 * 1024 * 1024),
)

_applied: dict[str, int] | None = None


def _glibc():
    """The process's C library when it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):  # musl and others have no gnu_get_libc_version
        return None
    version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc


def _chosen_by_user(variable: str, tunable: str, environ) -> bool:
    return variable in environ or tunable in environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory(environ=None, again: bool = False) -> dict[str, int]:
    """Applies SETTINGS; returns {glibc variable name: value} of what it set.

    Once per process: later calls return the first call's result, unless `again`
    (after TensorFlow changed the settings) applies them once more.
    """
    global _applied
    if _applied is not None and not again:
        return dict(_applied)
    environ = os.environ if environ is None else environ
    applied: dict[str, int] = {}
    libc = None if environ.get(OPT_OUT_VARIABLE, "1") == "0" else _glibc()
    if libc is not None:
        for parameter, variable, tunable, value in SETTINGS:
            if not _chosen_by_user(variable, tunable, environ) and libc.mallopt(parameter, value) == 1:
                applied[variable] = value
    _applied = applied
    return dict(applied)
