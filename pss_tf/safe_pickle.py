"""Reading the PSS-Net release's pickles without running what they name.

A PyTorch checkpoint (`torch.save`'s zip format: `<name>/data.pkl` plus one
file per tensor storage under `<name>/data/`) and the release's latency tables
(plain pickles) are files from elsewhere. Unpickling calls whatever callables a
file names, so these readers allow an exact list of globals, each one data-only,
and refuse any other with `UnsafePickleError` naming it. The refusal happens
when the name is read, before anything it names could run, and nothing is
written. Tensors come back as numpy arrays: PyTorch is not needed.

Every size a file declares is checked before anything of that size is
allocated or read: a tensor record must hold exactly the bytes its storage
declares (a longer or shorter one would be read shifted), no record or array
may exceed `MAX_RECORD_BYTES`, and all records together `MAX_TOTAL_BYTES`.
Any failure of the parsers on bad bytes becomes a `ConfigError` naming the file.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import numpy as np

from pss_tf.errors import ConfigError


class UnsafePickleError(ConfigError):
    """A pickle names a global that a release file never holds."""


# The release's largest tensor (MobileNetV1's 1024 x 1024 pointwise kernel, or a
# 1000-class classifier) is 4 MiB and a whole checkpoint about 35 MiB: these caps
# leave room for far larger networks while a forged size cannot take the memory.
MAX_RECORD_BYTES = 1 << 30
MAX_TOTAL_BYTES = 4 << 30


# torch.<Name>Storage -> numpy dtype of its elements.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
    """Stands for one `torch.<Name>Storage` class: only its element type matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class BadRecord:
    """A storage whose record does not hold exactly its declared bytes. It is not read:
    the tensors built on it stand for it until the loaded object names where they sit."""

    def __init__(self, record: str, dtype_name: str, declared: int, found: int):
        self.record, self.dtype_name, self.declared, self.found = record, dtype_name, declared, found

    def describe(self) -> str:
        return (f"its record {self.record} holds {self.found} bytes, but its {self.dtype_name} storage declares "
                f"{self.declared}: the tensor would be read shifted or cut")


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2` as numpy: a strided view of the storage, copied."""
    if isinstance(storage, BadRecord):
        return storage
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    if len(size) != len(stride) or any(n < 0 for n in size):
        raise pickle.UnpicklingError(f"a tensor of size {size} with strides {stride}")
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    needed = int(storage_offset) + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if needed > storage.size or storage_offset < 0 or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"a tensor of size {size} does not fit its storage of {storage.size} elements")
    base = storage[int(storage_offset):]
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(base, shape=size, strides=tuple(s * item for s in stride))
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
    """`torch._utils._rebuild_parameter`: a parameter is its tensor here."""
    return data


def _latin1_bytes(text, encoding="latin1"):
    """`_codecs.encode` as protocol 2 writes bytes: only the latin-1 form is allowed."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not a bytes literal")
    return text.encode("latin1")


def _numpy_globals() -> dict:
    """numpy's own data-only reconstructors (a pickled `np.random.get_state()`)."""
    table = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _reconstruct_array
        table[(module, "scalar")] = _numpy_scalar
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = _numpy_dtype
    return table


def _reconstruct_array(cls, shape, dtype_code):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("numpy _reconstruct of a class other than numpy.ndarray")
    _check_allocation(shape, np.dtype(dtype_code).itemsize, "a numpy array")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _check_allocation(shape, itemsize: int, what: str) -> None:
    """Refuses a declared shape whose bytes would exceed `MAX_RECORD_BYTES`, before allocating it."""
    dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    count = 1
    for n in dims:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise pickle.UnpicklingError(f"{what} of shape {dims!r}: not a shape")
        count *= int(n)
    if count * itemsize > MAX_RECORD_BYTES:
        raise pickle.UnpicklingError(f"{what} of shape {dims!r} declares {count * itemsize} bytes, more than "
                                     f"{MAX_RECORD_BYTES}")


def _numpy_dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} holds Python objects")
    return dtype


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("numpy scalar of an object dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _checkpoint_globals() -> dict:
    table = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("_codecs", "encode"): _latin1_bytes,
    }
    table.update({("torch", name): StorageType(name) for name in _STORAGE_DTYPES})
    table.update(_numpy_globals())
    return table


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of `allowed` ((module, name) -> object)."""

    def __init__(self, file, path: str, allowed: dict, persistent=None):
        super().__init__(file)
        self._path = path
        self._allowed = allowed
        self._persistent = persistent

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                None,
                f"{self._path}: refused to unpickle: it names {module}.{name}, a type a PSS-Net release file "
                f"never holds (nothing from the file was run)",
            ) from None

    def persistent_load(self, pid):
        if self._persistent is None:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return self._persistent(pid)


class _FileError(ConfigError):
    """A refusal that already names the file and what is wrong."""


def _bad_file(path: str, message: str) -> ConfigError:
    return _FileError(None, f"{path}: {message}")


# What a parser may raise on bad bytes (the C unpickler alone raises a dozen kinds).
_PARSE_ERRORS = (Exception,)


def _records(path: str, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's records by name; a name twice (which copy is meant?) is refused."""
    records = {}
    for info in archive.infolist():
        if info.filename in records:
            raise _bad_file(path, f"record {info.filename} appears twice in the zip; refusing to guess which is meant")
        records[info.filename] = info
    return records


def _read_record(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list) -> bytes:
    """A record's bytes, its declared size checked against the caps before reading."""
    if info.file_size > MAX_RECORD_BYTES or info.file_size > budget[0]:
        raise _bad_file(path, f"record {info.filename} declares {info.file_size} bytes, more than this reader "
                        f"allows (safe_pickle.MAX_RECORD_BYTES, MAX_TOTAL_BYTES)")
    budget[0] -= info.file_size
    return archive.read(info)


def load_torch_checkpoint(path: str):
    """The object `torch.save` wrote to `path` (zip format), tensors as numpy arrays.

    Raises `UnsafePickleError` for a file naming any other global, and
    `ConfigError` naming the file when it is not a readable PyTorch zip file,
    or naming the key of a tensor whose record is not exactly its storage's size.
    """
    path = os.fspath(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise _bad_file(path, "no such file") from None
    except _PARSE_ERRORS as e:
        raise _bad_file(
            path, f"not a PyTorch checkpoint in torch.save's zip format (torch >= 1.6), or truncated ({e})"
        ) from None
    with archive:
        try:
            data = _load_archive(path, archive)
        except (UnsafePickleError, _FileError):
            raise
        except _PARSE_ERRORS as e:
            raise _bad_file(path, f"not a readable PyTorch checkpoint, or truncated ({type(e).__name__}: {e})") from None
    bad = _find_bad_record(data)
    if bad is not None:
        where, record = bad
        raise _bad_file(path, f"key {where!r}: {record.describe()}")
    return data


def _load_archive(path: str, archive: zipfile.ZipFile):
    records = _records(path, archive)
    pickles = [n for n in records if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise _bad_file(path, "not a PyTorch checkpoint: the zip holds no <name>/data.pkl")
    prefix = pickles[0][: -len("data.pkl")]
    budget = [MAX_TOTAL_BYTES]
    byteorder = records.get(prefix + "byteorder")
    if byteorder is not None and _read_record(path, archive, byteorder, budget).strip() not in (b"little", b""):
        raise _bad_file(path, "written on a big-endian machine; only little-endian checkpoints are read")
    storages: dict[str, object] = {}

    def persistent(pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType) or not isinstance(key, str):
            raise pickle.UnpicklingError(f"unexpected storage reference {pid!r}")
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"storage {key} declares {numel!r} elements")
        if key in storages:
            return storages[key]
        name = f"{prefix}data/{key}"
        info = records.get(name)
        if info is None:
            raise pickle.UnpicklingError(f"storage {key} is missing from the zip")
        itemsize = 2 if storage_type.dtype == "bfloat16" else np.dtype(storage_type.dtype).itemsize
        if info.file_size != numel * itemsize:
            storages[key] = BadRecord(name, storage_type.name, numel * itemsize, info.file_size)
            return storages[key]
        raw = _read_record(path, archive, info, budget)
        if storage_type.dtype == "bfloat16":
            bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, storage_type.dtype)
        storages[key] = array
        return array

    data = _read_record(path, archive, records[pickles[0]], budget)
    return _RestrictedUnpickler(io.BytesIO(data), path, _checkpoint_globals(), persistent).load()


def _find_bad_record(data) -> tuple[str, BadRecord] | None:
    """(where, record) of the first tensor on a `BadRecord` in the loaded object: `model.<key>` style paths."""
    stack, seen = [("", data)], set()
    while stack:
        where, value = stack.pop()
        if isinstance(value, BadRecord):
            return where or "(the whole file)", value
        if id(value) in seen or not isinstance(value, (dict, list, tuple)):
            continue
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        children = [(f"{where}.{k}" if where and isinstance(k, str) else f"{where}[{k!r}]" if where else str(k), v)
                    for k, v in items]
        stack.extend(reversed(children))
    return None


def load_pickle(path: str, allowed: dict):
    """A plain pickle whose globals must all be in `allowed` ((module, name) -> object)."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_RECORD_BYTES:
            raise _bad_file(path, f"{size} bytes, more than this reader allows (safe_pickle.MAX_RECORD_BYTES)")
        with open(path, "rb") as f:
            data = f.read(MAX_RECORD_BYTES + 1)
        return _RestrictedUnpickler(io.BytesIO(data), path, allowed).load()
    except (UnsafePickleError, _FileError):
        raise
    except FileNotFoundError:
        raise _bad_file(path, "no such file") from None
    except _PARSE_ERRORS as e:
        raise _bad_file(path, f"not a readable pickle, or truncated ({type(e).__name__}: {e})") from None
