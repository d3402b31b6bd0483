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


# --- checkpoints with other pools: -C, -G and -M supernets of both models ---------------

SHORT = {"mobilenet_v1": "mbv1", "mobilenet_v2": "mbv2"}
VARIANTS = {"C": ("latency_cpu",), "G": ("latency_gpu",), "M": ("flops", "latency_cpu", "latency_gpu")}


def release_latency(table: dict, model: str, release_cfg: dict) -> float:
    """What the release's LatencyPredictor sums for a member: pss_tf's `release_blocks`, except that
    MobileNetV2's last conv and classifier are keyed at the ninth multiplier, as the release keys them."""
    from pss_tf.latency.release_luts import release_blocks
    from pss_tf.space.channels import make_divisible
    from pss_tf.space.config import SubnetConfig

    mults = release_cfg["stage_cout_mults"]
    stages = 14 if model == "mobilenet_v1" else 8
    blocks = release_blocks(SubnetConfig(model, release_cfg["resolution"], tuple(mults[:stages])))
    if model == "mobilenet_v2":
        last = make_divisible(1280 * mults[8])
        conv = blocks[-2]
        blocks[-2] = (conv[0], conv[1], conv[2], last, *conv[4:])
        blocks[-1] = ("Linear", 1, last, 1000, None, None, None, None)
    return sum(table[block] for block in blocks)


def with_pools(contents: dict, model: str, metrics, seed: int = 0) -> dict:
    """`contents` (a loaded release checkpoint) with pools of `metrics` (release names), filed as the
    release files them: the members of its FLOPs pools, each metric's value from the fixture's
    tables, targets rounded on the release's grid, members strictly inside it, random scores."""
    import ast
    import random

    from pss_tf.release.importer import RELEASE_GRIDS
    from pss_tf.latency.release_luts import read_release_lut

    rng = random.Random(seed)
    flops = contents["arch_pools"]["pools"]["flops"]
    members = [ast.literal_eval(key) for by_target in flops.values() for key in by_target]
    pools = {"max_size": 50, "infer_metric_target_list": {}, "pools": {}}
    for metric in metrics:
        start, stop, step = RELEASE_GRIDS[model][metric]
        offset = start % step
        table = read_release_lut(os.path.join(LUTS, f"{SHORT[model]}_{metric.split('_')[-1]}.pkl")) \
            if metric != "flops" else None
        by_target = {}
        for member in members:
            cfg = {"model_name": model, "infer_metric_type": metric, "resolution": member["resolution"],
                   "stage_cout_mults": list(member["stage_cout_mults"])}
            cfg["infer_metric"] = member["infer_metric"] if table is None else release_latency(table, model, member)
            target = round((cfg["infer_metric"] - offset) / step) * step + offset
            if start < target < stop:
                cfg["infer_metric_target"] = target
                by_target.setdefault(target, {})[str(cfg)] = -rng.uniform(0.5, 3.0)
        targets = sorted(by_target, reverse=True)
        pools["infer_metric_target_list"][metric] = targets
        pools["pools"][metric] = {t: by_target[t] for t in targets}
    changed = {k: v for k, v in contents.items() if k != "np_random_state"}  # the writer makes arrays tensors
    changed["model"] = collections.OrderedDict(contents["model"])
    changed["arch_pools"] = pools
    return changed
