"""pss_tf.allocator: glibc's malloc keeps what TensorFlow frees, unless the user chose otherwise.

Each case runs in a fresh interpreter (the settings belong to the process) and
reads glibc's own account of its memory (mallinfo2) after an 8 MiB malloc: with
the settings the block comes from the heap, which has grown by the 256 MiB top
pad; with glibc's defaults it is mapped on its own.
"""

import json
import os
import subprocess
import sys

import pytest

from pss_tf import allocator

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")

_PROBE = r"""
import ctypes, json
import pss_tf, pss_tf.allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
before = libc.mallinfo2()
block = libc.malloc(8 << 20)
after = libc.mallinfo2()
print(json.dumps({
    "applied": pss_tf.allocator.keep_freed_memory(),
    "mapped_growth": after.hblkhd - before.hblkhd,
    "heap_size": after.arena,
}))
"""


def _probe(**variables):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    environ.pop(allocator.OPT_OUT_VARIABLE, None)
    environ.update(variables)
    root = os.path.dirname(os.path.dirname(os.path.abspath(allocator.__file__)))
    environ["PYTHONPATH"] = root + os.pathsep + environ.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _PROBE], env=environ, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_importing_pss_tf_keeps_freed_memory_in_the_heap():
    result = _probe()
    assert result["applied"] == {
        "MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 2**31 - 1, "MALLOC_TOP_PAD_": 256 << 20,
    }
    assert result["mapped_growth"] == 0  # below the 32 MiB threshold: from the heap
    assert result["heap_size"] >= 256 << 20  # grown with the top pad


def test_opting_out_leaves_glibc_defaults():
    result = _probe(PSS_TF_MALLOC_TUNING="0")
    assert result["applied"] == {}
    assert result["mapped_growth"] >= 8 << 20  # above glibc's default 128 KiB threshold: mapped
    assert result["heap_size"] < 256 << 20


def test_the_users_malloc_variables_win():
    result = _probe(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TOP_PAD_="0")
    assert result["applied"] == {"MALLOC_TRIM_THRESHOLD_": 2**31 - 1}
    assert result["mapped_growth"] >= 8 << 20  # the user's 128 KiB threshold, no pad in the heap


def test_glibc_tunables_count_as_the_users_choice():
    result = _probe(GLIBC_TUNABLES="glibc.malloc.top_pad=0")
    assert set(result["applied"]) == {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}
