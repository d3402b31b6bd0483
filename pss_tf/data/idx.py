"""Reading IDX files (the MNIST / Fashion-MNIST container format) with numpy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the row-major payload.
Only unsigned bytes (type 0x08) are needed here.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

_UBYTE = 0x08


def _open(path: str):
    # Gzip is detected by content, not by name, so a renamed file still reads.
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _parse_header(path: str, head: bytes, ndim: int | None) -> tuple[int, ...]:
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {head[:4].hex()})")
    if head[2] != _UBYTE:
        raise ValueError(f"{path}: IDX element type 0x{head[2]:02x} is not unsigned byte (0x08)")
    if ndim is not None and head[3] != ndim:
        raise ValueError(f"{path}: expected an IDX file of {ndim} dimensions, found {head[3]}")
    if len(head) < 4 + 4 * head[3]:
        raise ValueError(f"{path}: truncated IDX header")
    return tuple(int(d) for d in np.frombuffer(head[4 : 4 + 4 * head[3]], dtype=">u4"))


def _read(path: str, header_only: bool) -> bytes:
    """Reads the header (or everything), naming the file in any I/O or gzip error."""
    try:
        with _open(path) as f:
            if not header_only:
                return f.read()
            head = f.read(4)
            return head + f.read(4 * head[3]) if len(head) == 4 else head
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from e


def read_idx_shape(path: str, ndim: int | None = None) -> tuple[int, ...]:
    """Returns the shape stored in an IDX header, reading only the header."""
    return _parse_header(path, _read(path, header_only=True), ndim)


def read_idx(path: str, ndim: int | None = None) -> np.ndarray:
    """Reads a whole uint8 IDX file, checking the payload matches the header."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    data = _read(path, header_only=False)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(data)} bytes)")
    shape = _parse_header(path, data[: 4 + 4 * data[3]], ndim)
    payload = memoryview(data)[4 + 4 * len(shape) :]
    expected = int(np.prod(shape, dtype=np.int64))
    if len(payload) != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) "
            f"but the payload has {len(payload)} bytes"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)
