"""A PSS-Net release checkpoint, read and checked, and its weights in a pss_tf supernet.

The release's `train.py` saves `checkpoint_NNN.pt` with `torch.save` as a dict:
`model` (the state dict of the supernet under `DataParallel`, keys starting
with `module.`), `optimizer`, `lr_scheduler`, `last_epoch`, `arch_pools` and
random states. `read_checkpoint` loads it without PyTorch and without running
anything the file names (`pss_tf.safe_pickle`), works out the model and
the class count from the state dict's shapes, and checks every key and shape
against what the release's network has, naming the file and the key at fault.

Layouts: PyTorch convs are (out, in, kh, kw), TensorFlow's (kh, kw, in, out);
depthwise kernels (C, 1, kh, kw) become (kh, kw, C, 1); the classifier's
(classes, features) weight is transposed. The release's slimmable batch norm
keeps its affine parameters on itself (`weight`, `bias`) and its running
statistics on an inner `bn` module.
"""

from __future__ import annotations

import ast
import dataclasses
import os

import numpy as np

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.io_utils import hash_file
from pss_tf.run.metrics import RELEASE_METRICS
from pss_tf.safe_pickle import load_torch_checkpoint
from pss_tf.space import architectures
from pss_tf.space.config import SubnetConfig

RELEASE_MODELS = ("mobilenet_v1", "mobilenet_v2")
# The release's multipliers per config; MobileNetV2's ninth is read by no layer.
_RELEASE_MULTIPLIERS = {"mobilenet_v1": 14, "mobilenet_v2": 9}


@dataclasses.dataclass
class ReleaseMember:
    """One pool member of the release: its config, EMA score and the metric value the release computed."""

    config: SubnetConfig
    score: float
    release_value: float
    dropped_multiplier: float | None = None


@dataclasses.dataclass
class ReleaseCheckpoint:
    path: str
    sha256: str
    model: str
    num_classes: int
    epoch: int | None
    state: dict[str, np.ndarray]  # without the `module.` prefix
    # {release metric name: {target: [members, best score first]}}
    pools: dict[str, dict[int | float, list[ReleaseMember]]]
    pool_capacity: int

    @property
    def metrics(self) -> list[str]:
        """The pss_tf names of the checkpoint's metrics, in the release's order."""
        return [RELEASE_METRICS[m] for m in self.pools]


def sha256_of(path: str) -> str:
    return hash_file(path).hexdigest()


def _error(path: str, key: str, message: str) -> ConfigError:
    return ConfigError("checkpoint", f"{path}: key {key!r}: {message}")


# --- the release's parameter layout ------------------------------------------------


def _slim_layer_prefixes(model: str, block_index: int, block) -> list[str]:
    """The release module paths of a pss_tf block's slimmable layers, in order.

    The release's blocks are `Sequential`s of conv, BN, ReLU6 triples (MobileNetV2's
    inverted residuals inside `.body`, with no ReLU after the projection's BN), so the
    k-th conv or BN sits at index 3 * (k // 2) + k % 2.
    """
    inner = ".body" if model == "mobilenet_v2" and block.kind == architectures.INVERTED_RESIDUAL else ""
    return [f"features.{block_index}{inner}.{3 * (k // 2) + k % 2}" for k in range(len(block.slim_layers()))]


def expected_shapes(model: str, num_classes: int) -> dict[str, tuple]:
    """Every key of the release's state dict of `model` (no `module.` prefix) with its shape."""
    from pss_tf.models.layers import SlimBatchNormalization, SlimConv2D, SlimDepthwiseConv2D

    shapes = {}
    for key, layer in _layer_map(_reference_supernet(model, num_classes)).items():
        if isinstance(layer, SlimBatchNormalization):
            c = layer.channels
            shapes.update({f"{key}.weight": (c,), f"{key}.bias": (c,), f"{key}.bn.running_mean": (c,),
                           f"{key}.bn.running_var": (c,), f"{key}.bn.num_batches_tracked": ()})
        elif isinstance(layer, SlimDepthwiseConv2D):
            shapes[f"{key}.weight"] = (layer.channels, 1, layer.kernel_size, layer.kernel_size)
        elif isinstance(layer, SlimConv2D):
            shapes[f"{key}.weight"] = (layer.filters, layer.in_channels, layer.kernel_size, layer.kernel_size)
        else:  # the classifier
            shapes[f"{key}.weight"] = (layer.units, layer.in_features)
            shapes[f"{key}.bias"] = (layer.units,)
    return shapes


_REFERENCE = {}


def _reference_supernet(model: str, num_classes: int):
    """A light stand-in with the supernet's layer objects (no weights built) for shapes."""
    from pss_tf.models.blocks import make_block
    from pss_tf.models.layers import SlimDense

    key = (model, num_classes)
    if key not in _REFERENCE:
        arch = architectures.get_architecture(model)
        blocks = [make_block(spec, arch.full_channels, 3, f"b{i}") for i, spec in enumerate(arch.blocks)]
        classifier = SlimDense(num_classes, arch.full_channels[arch.blocks[-1].out_stage], name="classifier")
        _REFERENCE[key] = (model, blocks, classifier)
    return _REFERENCE[key]


def _layer_map(supernet) -> dict:
    """{release module path: pss_tf slimmable layer} for a Supernet or a `_reference_supernet`."""
    if isinstance(supernet, tuple):
        model, blocks, classifier = supernet
    else:
        model, blocks, classifier = supernet.model_name, supernet.feature_blocks, supernet.classifier
    layers = {}
    for i, block in enumerate(blocks):
        for prefix, layer in zip(_slim_layer_prefixes(model, i, block), block.slim_layers()):
            layers[prefix] = layer
    layers["classifier.0"] = classifier
    return layers


def detect_model(path: str, state: dict) -> tuple[str, int]:
    """(model, classes) from the state dict's keys and shapes."""
    if "classifier.0.weight" not in state:
        raise _error(path, "model.classifier.0.weight", "missing: not a state dict of the release's MobileNets")
    classifier = state["classifier.0.weight"]
    if getattr(classifier, "ndim", 0) != 2:
        raise _error(path, "model.classifier.0.weight", f"expected a 2-d weight, got shape {np.shape(classifier)}")
    num_classes, features = classifier.shape
    if "features.1.body.0.weight" in state or features == 1280:
        model = "mobilenet_v2"
    elif "features.1.0.weight" in state and features == 1024:
        model = "mobilenet_v1"
    else:
        raise _error(
            path, "model.classifier.0.weight",
            f"a classifier reading {features} features and no MobileNet block layout: the release's "
            "MobileNetV1 reads 1024, its MobileNetV2 1280; this is another architecture",
        )
    return model, int(num_classes)


def check_state(path: str, state: dict, model: str, num_classes: int) -> None:
    """Refuses missing keys, extra keys and wrong shapes, naming the first of each."""
    expected = expected_shapes(model, num_classes)
    missing = [k for k in expected if k not in state]
    if missing:
        raise _error(path, f"model.{missing[0]}", f"missing ({len(missing)} keys of the release's {model} are missing)")
    extra = [k for k in state if k not in expected]
    if extra:
        raise _error(path, f"model.{extra[0]}", f"not a parameter of the release's {model} ({len(extra)} unexpected keys)")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, np.ndarray):
            raise _error(path, f"model.{key}", f"expected a tensor, got {type(value).__name__}")
        if tuple(value.shape) != shape:
            raise _error(path, f"model.{key}", f"shape {tuple(value.shape)}, the release's {model} has {shape}")
        counter = key.endswith("num_batches_tracked")
        kind = "iu" if counter else "f"
        if value.dtype.kind not in kind:
            expected_kind = "an integer" if counter else "a floating-point"
            raise _error(path, f"model.{key}", f"a {value.dtype} tensor; the release saves {expected_kind} one here")
        if not counter and not np.all(np.isfinite(value)):
            raise _error(path, f"model.{key}", "holds NaN or infinite values")


# --- reading -------------------------------------------------------------------------


def read_checkpoint(path: str) -> ReleaseCheckpoint:
    """Loads and checks a release checkpoint (see the module docstring)."""
    path = os.fspath(path)
    data = load_torch_checkpoint(path)
    try:
        return _checked(path, data)
    except ConfigError:
        raise
    except Exception as e:  # Whatever else malformed contents trip on: still a refusal naming the file.
        raise ConfigError("checkpoint", f"{path}: not a PSS-Net release checkpoint ({type(e).__name__}: {e})") from None


def _checked(path: str, data) -> ReleaseCheckpoint:
    if not isinstance(data, dict):
        raise ConfigError("checkpoint", f"{path}: not a PSS-Net release checkpoint (a {type(data).__name__}, not a dict)")
    for key in ("model", "arch_pools"):
        if key not in data:
            raise _error(path, key, "missing: not a PSS-Net release checkpoint (train.py saves model and arch_pools)")
    raw = data["model"]
    if not isinstance(raw, dict):
        raise _error(path, "model", f"expected a state dict, got {type(raw).__name__}")
    state = {}
    for key, value in raw.items():
        name = key[len("module."):] if isinstance(key, str) and key.startswith("module.") else key
        state[name] = value
    model, num_classes = detect_model(path, state)
    check_state(path, state, model, num_classes)
    epoch = data.get("last_epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        raise _error(path, "last_epoch", f"expected an int, got {epoch!r}")
    pools, capacity = _read_pools(path, data["arch_pools"], model)
    return ReleaseCheckpoint(path, sha256_of(path), model, num_classes, epoch, state, pools, capacity)


def _read_pools(path: str, arch_pools, model: str):
    if not isinstance(arch_pools, dict) or not isinstance(arch_pools.get("pools"), dict):
        raise _error(path, "arch_pools.pools", "missing or not a dict")
    capacity = arch_pools.get("max_size", 50)
    if not checks.is_integer(capacity, 1):
        raise _error(path, "arch_pools.max_size", f"expected a positive int, got {capacity!r}")
    pools = {}
    for metric, by_target in arch_pools["pools"].items():
        where = f"arch_pools.pools[{metric!r}]"
        if metric not in RELEASE_METRICS:
            raise _error(path, where, f"unknown metric {metric!r}; the release has {sorted(RELEASE_METRICS)}")
        if not isinstance(by_target, dict):
            raise _error(path, where, "expected a dict of targets")
        pools[metric] = {}
        for target, members in by_target.items():
            here = f"{where}[{target!r}]"
            if isinstance(target, bool) or not isinstance(target, (int, float)) or not isinstance(members, dict):
                raise _error(path, here, "expected a numeric target holding a dict of members")
            parsed = [_read_member(path, f"{here}[{key!r}]", key, score, model, metric, target)
                      for key, score in members.items()]
            parsed.sort(key=lambda m: -m.score)  # stable: ties keep the release's insertion order
            pools[metric][target] = parsed
    if not pools:
        raise _error(path, "arch_pools.pools", "holds no metric")
    return pools, capacity


_MAX_MEMBER_KEY = 4096


def _read_member(path, where, key, score, model, metric, target) -> ReleaseMember:
    """A member keyed by `str()` of the release's model_cfg dict (read as a literal, never evaluated)."""
    try:  # The release's keys are a few hundred characters; a longer one is no config.
        cfg = ast.literal_eval(key) if isinstance(key, str) and len(key) <= _MAX_MEMBER_KEY else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        cfg = None
    if not isinstance(cfg, dict) or {"model_name", "resolution", "stage_cout_mults"} - set(cfg):
        raise _error(path, where, "not a release subnet config (model_name, resolution, stage_cout_mults)")
    if cfg["model_name"] != model:
        raise _error(path, where, f"a {cfg['model_name']} config in a {model} checkpoint")
    if cfg.get("infer_metric_type", metric) != metric:
        raise _error(path, where, f"a {cfg['infer_metric_type']} config in the {metric} pools")
    if cfg.get("infer_metric_target", target) != target:
        raise _error(path, where, f"a config of target {cfg['infer_metric_target']} in the pool of {target}")
    mults = cfg["stage_cout_mults"]
    if not isinstance(mults, list) or len(mults) != _RELEASE_MULTIPLIERS[model]:
        raise _error(path, where, f"expected {_RELEASE_MULTIPLIERS[model]} multipliers, got {mults!r}")
    stages = architectures.get_architecture(model).num_stages
    if not checks.is_finite_number(score):
        raise _error(path, where, f"score must be a finite number, got {score!r}")
    try:
        config = SubnetConfig(model, cfg["resolution"], tuple(mults[:stages]))
    except ValueError as e:
        raise _error(path, where, str(e)) from None
    dropped = float(mults[stages]) if len(mults) > stages else None
    return ReleaseMember(config, float(score), float(cfg.get("infer_metric", np.nan)), dropped)


# --- into a supernet ----------------------------------------------------------------


def tf_layout(array: np.ndarray, kind: str) -> np.ndarray:
    """A PyTorch weight in TensorFlow's layout."""
    if kind == "conv":
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    if kind == "depthwise":
        return np.ascontiguousarray(array.transpose(2, 3, 0, 1))
    if kind == "dense":
        return np.ascontiguousarray(array.T)
    raise ValueError(kind)


def load_into_supernet(supernet, checkpoint: ReleaseCheckpoint) -> None:
    """Assigns the checkpoint's weights and BN statistics to a pss_tf supernet of the same model."""
    from pss_tf.models.layers import SlimBatchNormalization, SlimConv2D, SlimDepthwiseConv2D

    if supernet.model_name != checkpoint.model or supernet.num_classes != checkpoint.num_classes:
        raise ValueError(
            f"supernet: a {supernet.model_name} with {supernet.num_classes} classes cannot take a "
            f"{checkpoint.model} checkpoint with {checkpoint.num_classes}"
        )
    state = checkpoint.state
    for key, layer in _layer_map(supernet).items():
        if isinstance(layer, SlimBatchNormalization):
            pairs = [(layer.gamma, state[f"{key}.weight"]), (layer.beta, state[f"{key}.bias"]),
                     (layer.moving_mean, state[f"{key}.bn.running_mean"]),
                     (layer.moving_variance, state[f"{key}.bn.running_var"])]
        elif isinstance(layer, SlimDepthwiseConv2D):
            pairs = [(layer.kernel, tf_layout(state[f"{key}.weight"], "depthwise"))]
        elif isinstance(layer, SlimConv2D):
            pairs = [(layer.kernel, tf_layout(state[f"{key}.weight"], "conv"))]
        else:
            pairs = [(layer.kernel, tf_layout(state[f"{key}.weight"], "dense")), (layer.bias, state[f"{key}.bias"])]
        for variable, value in pairs:
            variable.assign(np.asarray(value, dtype=np.float32))
