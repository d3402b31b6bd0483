"""The end of every subnet: global average pool and the classifier, with, in
MobileNetV3, a hidden linear layer and its activation between the two
(`Architecture.head_hidden`, a fixed width)."""

from __future__ import annotations

from pss_tf.space.kinds.base import BlockKind, register


class HeadKind(BlockKind):
    name = "head"
    keras_block = "pss_tf.models.kinds.head:Head"
    activation = ""  # No hidden layer; a variant with a hidden layer names its activation.

    def head_macs(self, size, cin, hidden: int, num_classes: int, pools: bool = True):
        """Pool (h*w*c, when `pools`), then the linear layer(s)."""
        total = size * size * cin if pools else 0
        if hidden:
            return total + cin * hidden + hidden * num_classes
        return total + cin * num_classes

    def head_params(self, cin, hidden: int, num_classes: int):
        if hidden:
            return cin * hidden + hidden + hidden * num_classes + num_classes
        return cin * num_classes + num_classes

    def check_variant(self, variant):
        super().check_variant(variant)
        if not variant.activation and variant.hidden != variant.cin:
            raise ValueError(f"hidden: a head without a hidden layer has hidden == cin, got {variant.hidden}")
        return {"expand": False}


HEAD = register(HeadKind())
