"""What every block kind tells the pure layers: its costs and its latency-table key.

A block kind is registered once (`register`), by name, with the dotted path of
its Keras class (`keras_block`, imported only by the Keras side, so the space
and cost code stay free of TensorFlow). The cost model sums `macs` and `params`
over an architecture's blocks; the latency tables key a block's variant by
`variant_flags`. Both run on Python ints (one subnet) and numpy arrays (many).

Defaults a block spec may override: `kernel` (the main conv's), `activation`
and, for the kinds that have one, squeeze-and-excite (`BlockSpec.se`).
"""

from __future__ import annotations

RELU6, RELU, HARD_SWISH = "relu6", "relu", "hard_swish"  # MobileNetV1/V2's, ResNet's, MobileNetV3's.
ACTIVATIONS = (RELU6, RELU, HARD_SWISH)
_SHORT = {RELU6: "relu6", RELU: "relu", HARD_SWISH: "hs"}  # How a variant key names a non-default activation.


def ceil_div(size, stride):
    """The output size of a 'same'-padded layer of this stride."""
    return -(-size // stride)


def bn_weights(channels, bn: int):
    """A batch norm's weights: `bn` per channel (4 with the moving statistics, 2 trainable)."""
    return bn * channels


class BlockKind:
    """One kind of block. Subclasses set the class attributes and the cost methods.

    `spec` arguments are `pss_tf.space.architectures.BlockSpec`s; `table` is a
    channel table (ints, or arrays for many configs); `cin`/`cout` the block's
    active input and output widths; `size` its input's side.
    """

    name: str = ""
    keras_block: str = ""  # "module:Class" of the slimmable block (pss_tf.models).
    kernel: int = 0  # The main conv's kernel (0: the kind has none).
    activation: str = RELU6
    has_inner: bool = False  # Whether the kind has an inner width besides its input's.
    accepts_se: bool = False

    def inner(self, spec, table, cin):
        """The inner width(s) a latency variant carries: (hidden, hidden2)."""
        return cin, 0

    def macs(self, spec, table, cin, cout, size, pools: bool = True):
        """(multiply-accumulates, output size) of the block."""
        raise NotImplementedError

    def params(self, spec, table, cin, cout, bn: int = 4):
        """Weights of the block (conv kernels, biases, `bn` per batch-norm channel)."""
        raise NotImplementedError

    # --- latency variants ---------------------------------------------------

    def check_variant(self, variant) -> dict:
        """Normalised values of a variant's kind-specific fields ({field: value}), or ValueError."""
        if variant.hidden2 != 0:
            raise ValueError(f"hidden2: a bottleneck's second inner width (0 for {self.name}), got {variant.hidden2!r}")
        return {"expand": False}

    def variant_flags(self, variant) -> list[str]:
        """The key's flags beyond `add`: the spec's departures from the kind's defaults."""
        flags = []
        if variant.kernel not in (0, self.kernel):
            flags.append(f"k{variant.kernel}")
        if variant.se:
            flags.append("se")
        if variant.activation not in ("", self.activation):
            flags.append(_SHORT[variant.activation])
        return flags


def parse_flag(flag: str) -> dict | None:
    """The variant fields a generic key flag sets (`k5`, `se`, `hs`), or None."""
    if flag == "se":
        return {"se": True}
    if flag in _SHORT.values():
        return {"activation": next(a for a, s in _SHORT.items() if s == flag)}
    if flag.startswith("k") and flag[1:].isdigit():
        return {"kernel": int(flag[1:])}
    return None


_REGISTRY: dict[str, BlockKind] = {}


def register(kind: BlockKind) -> BlockKind:
    """Adds `kind` to the registry under its name (once)."""
    if not kind.name or kind.name in _REGISTRY:
        raise ValueError(f"kind: {kind.name!r} is empty or already registered")
    _REGISTRY[kind.name] = kind
    return kind


def get(name: str) -> BlockKind:
    """The registered kind `name`; ValueError naming the known ones if none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"kind: unknown block kind {name!r}; expected one of {sorted(_REGISTRY)}") from None


def names() -> tuple[str, ...]:
    """Every registered kind, in registration order."""
    return tuple(_REGISTRY)
