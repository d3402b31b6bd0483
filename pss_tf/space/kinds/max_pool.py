"""ResNet's 3x3 max pool after its stem: no weights, and no multiply-accumulates
(torchvision's count); widths pass through."""

from __future__ import annotations

from pss_tf.space.kinds.base import BlockKind, ceil_div, register

POOL_KERNEL = 3


class MaxPoolKind(BlockKind):
    name = "max_pool"
    keras_block = "pss_tf.models.kinds.max_pool:MaxPoolBlock"
    kernel = POOL_KERNEL

    def macs(self, spec, table, cin, cout, size, pools=True):
        return 0, ceil_div(size, spec.stride)

    def params(self, spec, table, cin, cout, bn=4):
        return 0


MAX_POOL = register(MaxPoolKind())
