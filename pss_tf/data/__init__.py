"""Input pipelines for pss_tf.

Every pipeline yields `(images, labels)`: images float32 (B, S, S, C),
normalised as the run says (`NORMALIZATIONS`: ImageNet mean/std, as the
release, or x / 127.5 - 1) at S = the search space's maximum resolution (the
network resizes to each subnet's resolution itself), labels int32 (B,). A
run's pipelines all come from its `DataSettings` (`settings`).

Datasets, by `dataset` name:
  synthetic      generated in memory, learnable (class colours and stripes)
  fashion_mnist  IDX files in data_dir (default /usr/share/datasets/fashion-mnist)
  imagefolder    data_dir/{train,val}/<class>/*.{jpg,png,...}
  other names    a TFDS dataset already prepared in data_dir (never downloaded)
"""

from pss_tf.data.pipeline import (
    DEFAULT_SHUFFLE_BUFFER,
    load,
    make_input_fn,
    steps_per_epoch,
)
from pss_tf.data.preprocessing import (
    DEFAULT_CROP_FRACTION,
    DEFAULT_CROP_SCALE,
    NORMALIZATIONS,
    normalize,
    preprocess_for_eval,
    preprocess_for_train,
)
from pss_tf.data.sources import (
    BUILTIN_DATASETS,
    FASHION_MNIST_DIR,
    SPLITS,
    DatasetInfo,
    SyntheticSpec,
    check_dataset,
    imagefolder_classes,
    load_fashion_mnist_arrays,
)

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_CROP_FRACTION",
    "DEFAULT_CROP_SCALE",
    "DEFAULT_SHUFFLE_BUFFER",
    "FASHION_MNIST_DIR",
    "NORMALIZATIONS",
    "SPLITS",
    "DatasetInfo",
    "SyntheticSpec",
    "check_dataset",
    "imagefolder_classes",
    "load",
    "load_fashion_mnist_arrays",
    "make_input_fn",
    "normalize",
    "preprocess_for_eval",
    "preprocess_for_train",
    "steps_per_epoch",
]
