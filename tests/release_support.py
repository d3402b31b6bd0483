"""Helpers of the release tests: the fixtures, and torch.save's zip layout written without torch."""

import collections
import io
import lzma
import os
import pickle
import zipfile

import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "release")
LUTS = os.path.join(FIXTURES, "lut")


def release_file(tmp_path, short: str) -> str:
    """The release-written checkpoint `short` (mbv1, mbv2), decompressed into `tmp_path`."""
    path = tmp_path / f"{short}.pt"
    if not path.exists():
        with lzma.open(os.path.join(FIXTURES, f"{short}.pt.xz")) as f:
            path.write_bytes(f.read())
    return str(path)


class _Global:
    """A reference to `module.name` written as a GLOBAL opcode, whether or not it is importable here."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable
        raise AssertionError("never called")


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _TorchZipPickler(pickle._Pickler):
    """Writes data.pkl as torch.save does: tensors rebuilt by torch._utils._rebuild_tensor_v2 from storages."""

    def __init__(self, file, storages):
        super().__init__(file, protocol=2)
        self.storages = storages

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            names = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
                     np.dtype(np.uint8): "ByteStorage"}
            return ("storage", _Global("torch", names[obj.array.dtype]), obj.key, "cpu", obj.array.size)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            array = obj.copy(order="C")  # (ascontiguousarray would make a 0-d array 1-d)
            key = str(len(self.storages))
            self.storages[key] = array
            stride = tuple(s // array.itemsize for s in array.strides)
            args = (_Storage(key, array), 0, array.shape, stride, False, collections.OrderedDict())
            return (_Global("torch._utils", "_rebuild_tensor_v2"), args)
        return NotImplemented


def write_torch_zip(path, obj, data_pkl: bytes | None = None):
    """A checkpoint in torch.save's zip layout, written without torch (or with a given data.pkl)."""
    storages = {}
    if data_pkl is None:
        buffer = io.BytesIO()
        _TorchZipPickler(buffer, storages).dump(obj)
        data_pkl = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, array in storages.items():
            archive.writestr(f"archive/data/{key}", array.tobytes())
        archive.writestr("archive/version", "3\n")


def rewrite_records(source, path, change) -> str:
    """A copy of the zip `source` at `path` whose record bytes pass through `change(name, data)`
    (each record rewritten with a fresh CRC, so only what `change` did differs)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as archive:
        for info in original.infolist():
            archive.writestr(info, change(info.filename, original.read(info)))
    return str(path)
