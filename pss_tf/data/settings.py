"""One object for every data setting of a run.

Training, evaluation, BN calibration, export and the serving signatures must
all read the same dataset with the same preprocessing, or served accuracy
drifts from evaluated accuracy. `DataSettings` is derived once from a run's
configuration (`TrainConfig.data_settings()`) and hands out every pipeline the
run needs; a moved dataset is one `with_data_dir` away.
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow as tf

from pss_tf.data import pipeline, preprocessing, sources
from pss_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Which dataset, where, at what size, and how images are preprocessed.

    `image_size` is the search space's largest resolution: every pipeline
    yields images of that size and the network resizes them per subnet.

    `holdout_examples`: the last N examples of the training split are held out
    of every training stream (hence of BN calibration too) and read with
    `holdout`; indexed sources only (not TFDS record datasets).
    """

    dataset: str
    data_dir: str | None
    image_size: int
    synthetic: sources.SyntheticSpec = sources.SyntheticSpec()
    crop_scale: tuple[float, float] = preprocessing.DEFAULT_CROP_SCALE
    flip: bool = True
    color_jitter: float = 0.0
    lighting: float = 0.0
    normalization: str = "imagenet"
    crop_fraction: float = preprocessing.DEFAULT_CROP_FRACTION
    holdout_examples: int = 0

    def with_data_dir(self, data_dir: str | None) -> "DataSettings":
        """The same settings reading the data from `data_dir` (None: unchanged)."""
        return self if data_dir is None else dataclasses.replace(self, data_dir=data_dir)

    @functools.cached_property
    def info(self) -> sources.DatasetInfo:
        """The dataset's description; checks the data is there and `holdout_examples`
        fits it (ConfigError otherwise)."""
        holdout = self.holdout_examples
        if holdout and self.dataset not in sources.BUILTIN_DATASETS:
            raise ConfigError(
                "holdout_examples",
                f"{self.dataset} is a TFDS dataset, streamed from its record shards in order, so no fixed set of "
                f"training examples can be kept out of every epoch; use 0, or an indexed source "
                f"({', '.join(sources.BUILTIN_DATASETS)})",
            )
        info = sources.check_dataset(self.dataset, self.data_dir, synthetic=self.synthetic)
        if holdout >= info.num_train:
            raise ConfigError(
                "holdout_examples", f"{holdout} leaves none of the {info.num_train} training examples to train on"
            )
        return info

    @property
    def normalization_text(self) -> str:
        """How pixels become network inputs, in words (for manifests)."""
        return preprocessing.NORMALIZATIONS[self.normalization]

    def steps_per_epoch(self, global_batch_size: int) -> int:
        """Full batches in one pass over the training examples (held-out ones excluded)."""
        return pipeline.steps_per_epoch(self.info, global_batch_size, self.holdout_examples)

    def _options(self) -> dict:
        return dict(
            channels=self.info.channels,
            synthetic=self.synthetic,
            crop_scale=self.crop_scale,
            flip=self.flip,
            color_jitter=self.color_jitter,
            lighting=self.lighting,
            normalization=self.normalization,
            crop_fraction=self.crop_fraction,
        )

    def input_fn(self, global_batch_size: int, seed: int, start_step: int = 0):
        """The endless augmented training stream, for `distribute_datasets_from_function`."""
        return pipeline.make_input_fn(
            self.dataset, self.data_dir, "train", self.image_size, global_batch_size,
            training=True, seed=seed, start_step=start_step, holdout_examples=self.holdout_examples,
            **self._options(),
        )

    def training(self, batch_size: int, seed: int) -> tf.data.Dataset:
        """The endless augmented training stream on one device."""
        return pipeline.load(
            self.dataset, self.data_dir, "train", self.image_size, batch_size, training=True, seed=seed,
            holdout_examples=self.holdout_examples, **self._options(),
        )

    def validation(self, batch_size: int, limit: int = 0) -> tf.data.Dataset:
        """One ordered pass over the validation split (the first `limit` examples; 0: all)."""
        dataset = pipeline.load(
            self.dataset, self.data_dir, "val", self.image_size, batch_size, training=False, **self._options()
        )
        return dataset.unbatch().take(limit).batch(batch_size) if limit else dataset

    def holdout(self, batch_size: int, limit: int = 0) -> tf.data.Dataset:
        """One ordered pass, with evaluation preprocessing, over the held-out training
        examples (the first `limit` of them; 0: all)."""
        if not self.holdout_examples:
            raise ConfigError("holdout_examples", "the run holds no training examples out (it is 0)")
        indices = pipeline.holdout_indices(self.info.num_train, self.holdout_examples)
        return self._train_examples(batch_size, indices[:limit] if limit else indices)

    def train_subset(self, batch_size: int, examples: int) -> tf.data.Dataset:
        """A fixed subset of `examples` training examples (held-out ones excluded), with
        evaluation preprocessing, in one ordered pass.

        Indexed sources: indices spread evenly over the split, so a class-sorted
        source (image folders) contributes every class. TFDS: the first records.
        """
        if examples < 1:
            raise ValueError(f"examples: must be at least 1, got {examples}")
        available = self.info.num_train - self.holdout_examples
        examples = min(examples, available)
        if self.dataset in sources.BUILTIN_DATASETS:
            return self._train_examples(batch_size, [i * available // examples for i in range(examples)])
        dataset = pipeline.load(
            self.dataset, self.data_dir, "train", self.image_size, batch_size, training=False, **self._options()
        )
        return dataset.unbatch().take(examples).batch(batch_size)

    def _train_examples(self, batch_size: int, indices) -> tf.data.Dataset:
        return pipeline.load(
            self.dataset, self.data_dir, "train", self.image_size, batch_size, training=False, examples=indices,
            **self._options(),
        )

    def prepare_batch(self, images: tf.Tensor) -> tf.Tensor:
        """A client's uint8 batch (N, H, W, C) of any size -> the network input evaluation saw.

        Serving graphs call this, so a served subnet sees what the evaluated
        one saw: the evaluation geometry (`eval_resize_and_crop`) and the
        training normalisation.
        """
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4:
            raise ValueError(f"images: expected a batch (N, H, W, C), got shape {images.shape}")
        channels = self.info.channels
        if images.shape[-1] not in (None, channels):
            raise ValueError(f"images: expected {channels} channels, got {images.shape[-1]}")
        x = preprocessing.eval_resize_and_crop(images, self.image_size, self.crop_fraction)
        return preprocessing.normalize(x, self.normalization)

    def raw_split(self, split: str):
        """The undecoded-to-network split: uint8 images as the dataset stores them."""
        _, raw = sources.open_split(
            self.dataset, self.data_dir, split, self.image_size, channels=self.info.channels, synthetic=self.synthetic
        )
        return raw
