"""pss_tf: resource-adaptive supernets trained with Prioritized Subnet Sampling.

The pure-Python parts (configs, cost model, pools) import without TensorFlow;
the Keras parts load on first use. Importing pss_tf first tells glibc's malloc
to keep the memory TensorFlow frees (`pss_tf.allocator`; `PSS_TF_MALLOC_TUNING=0`
leaves glibc's defaults), and, before TensorFlow is imported, turns on its oneDNN
kernels on every x86 CPU (`pss_tf.cpu_kernels`; TensorFlow's default leaves them
off on AVX2-only CPUs; a `TF_ENABLE_ONEDNN_OPTS` the user set is kept,
`PSS_TF_ONEDNN=0` leaves TensorFlow's default).
"""

from pss_tf.allocator import keep_freed_memory
from pss_tf.cpu_kernels import prefer_onednn

keep_freed_memory()
prefer_onednn()

from pss_tf.space.config import SearchSpace, SubnetConfig, make_divisible  # noqa: E402
from pss_tf.space.cost import count_flops, count_params, count_trainable_params  # noqa: E402

__version__ = "0.2.0"  # 0.2: the file formats of today; pss_tf.run.compat reads 0.1's.

_LAZY = {"build_supernet": "pss_tf.models.supernet", "Supernet": "pss_tf.models.supernet"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pss_tf' has no attribute {name!r}")


__all__ = [
    "SearchSpace",
    "SubnetConfig",
    "make_divisible",
    "count_flops",
    "count_params",
    "count_trainable_params",
    "build_supernet",
    "Supernet",
]
