"""Reading the PSS-Net release's pickles without running what they name.

A PyTorch checkpoint (`torch.save`'s zip format: `<name>/data.pkl` plus one
file per tensor storage under `<name>/data/`) and the release's latency tables
(plain pickles) are files from elsewhere. Unpickling calls whatever callables a
file names, so these readers allow an exact list of globals, each one data-only,
and refuse any other with `UnsafePickleError` naming it. The refusal happens
when the name is read, before anything it names could run, and nothing is
written. Tensors come back as numpy arrays: PyTorch is not needed.
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


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2` as numpy: a strided view of the storage, copied."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    needed = int(storage_offset) + 1 + sum((n - 1) * s for n, s in zip(size, stride) if n > 0)
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
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
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


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


def _bad_file(path: str, message: str) -> ConfigError:
    return ConfigError(None, f"{path}: {message}")


def load_torch_checkpoint(path: str):
    """The object `torch.save` wrote to `path` (zip format), tensors as numpy arrays.

    Raises `UnsafePickleError` for a file naming any other global, and
    `ConfigError` naming the file when it is not a readable PyTorch zip file.
    """
    path = os.fspath(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise _bad_file(path, "no such file") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise _bad_file(
            path, f"not a PyTorch checkpoint in torch.save's zip format (torch >= 1.6), or truncated ({e})"
        ) from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise _bad_file(path, "not a PyTorch checkpoint: the zip holds no <name>/data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in names and archive.read(byteorder).strip() not in (b"little", b""):
            raise _bad_file(path, "written on a big-endian machine; only little-endian checkpoints are read")
        storages: dict[str, np.ndarray] = {}

        def persistent(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
            _, storage_type, key, _location, numel = pid
            if not isinstance(storage_type, StorageType) or not isinstance(key, str):
                raise pickle.UnpicklingError(f"unexpected storage reference {pid!r}")
            if key not in storages:
                try:
                    raw = archive.read(f"{prefix}data/{key}")
                except KeyError:
                    raise pickle.UnpicklingError(f"storage {key} is missing from the zip") from None
                if storage_type.dtype == "bfloat16":
                    bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
                    array = bits.view(np.float32)
                else:
                    array = np.frombuffer(raw, storage_type.dtype)
                if array.size < int(numel):
                    raise pickle.UnpicklingError(f"storage {key} holds {array.size} of {numel} elements")
                storages[key] = array
            return storages[key]

        try:
            data = archive.read(pickles[0])
            return _RestrictedUnpickler(io.BytesIO(data), path, _checkpoint_globals(), persistent).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, OSError) as e:
            raise _bad_file(path, f"not a readable PyTorch checkpoint, or truncated ({type(e).__name__}: {e})") from None


def load_pickle(path: str, allowed: dict):
    """A plain pickle whose globals must all be in `allowed` ((module, name) -> object)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path, allowed).load()
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise _bad_file(path, "no such file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, OSError) as e:
        raise _bad_file(path, f"not a readable pickle, or truncated ({type(e).__name__}: {e})") from None
