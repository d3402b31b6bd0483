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

import numpy as np
import tensorflow as tf

from pss_tf import config_flags
from pss_tf.data import pipeline, preprocessing, selection, sources
from pss_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Which dataset, where, at what size, and how images are preprocessed.

    `image_size` is the search space's largest resolution: every pipeline
    yields images of that size and the network resizes them per subnet.

    `holdout_examples`: N examples of the training split are held out of
    every training stream (hence of BN calibration too) and read with
    `holdout`; indexed sources only (not TFDS record datasets). Which ones:
    `holdout_selection` (`selection.Holdout`), drawn with `selection_seed`
    (the run's seed), which also draws limited validation subsets.

    `classes`: only these classes' examples, relabelled 0..k-1 in the order
    given (indexed sources); every split, count and pipeline sees the subset.
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
    holdout_selection: str = "stratified"
    selection_seed: int = 0
    classes: tuple[int, ...] = ()

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
        if self.classes:
            info, _ = sources.open_split(
                self.dataset, self.data_dir, "train", self.image_size, synthetic=self.synthetic, classes=self.classes
            )
        else:
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

    @property
    def holdout_spec(self) -> selection.Holdout:
        """Which training examples the run holds out."""
        return selection.Holdout(self.holdout_examples, self.holdout_selection, self.selection_seed)

    def steps_per_epoch(self, global_batch_size: int) -> int:
        """Full batches in one pass over the training examples (held-out ones excluded)."""
        return pipeline.steps_per_epoch(self.info, global_batch_size, self.holdout_examples)

    def _options(self) -> dict:
        """`pipeline.make_input_fn`'s data arguments, every field that is one of them
        (the held-out fields reach it as `holdout`, `holdout_spec`)."""
        return config_flags.keyword_arguments(
            pipeline.make_input_fn, self, renamed={"dataset": "name"},
            elsewhere=("holdout_examples", "holdout_selection", "selection_seed"), channels=self.info.channels,
        )

    def input_fn(self, global_batch_size: int, seed: int, start_step: int = 0):
        """The endless augmented training stream, for `distribute_datasets_from_function`."""
        return pipeline.make_input_fn(
            split="train", global_batch_size=global_batch_size, training=True, seed=seed, start_step=start_step,
            holdout=self.holdout_spec, **self._options(),
        )

    def training(self, batch_size: int, seed: int) -> tf.data.Dataset:
        """The endless augmented training stream on one device."""
        return pipeline.load(
            split="train", batch_size=batch_size, training=True, seed=seed,
            holdout=self.holdout_spec, **self._options(),
        )

    def validation(self, batch_size: int, limit: int = 0) -> tf.data.Dataset:
        """One ordered pass over the validation split, or over `limit` of its examples
        (`subset_indices`: a seeded draw, every class its share; TFDS: the first
        `limit` records)."""
        indices = self.subset_indices("val", limit)
        if indices is not None:
            return self._examples("val", batch_size, indices)
        dataset = pipeline.load(split="val", batch_size=batch_size, training=False, **self._options())
        return dataset.unbatch().take(limit).batch(batch_size) if limit else dataset

    def subset_indices(self, split: str, limit: int):
        """The examples a pass limited to `limit` reads (0: None, the whole split).

        Indexed sources: a draw stratified by class (`selection.stratified_draw`,
        seeded by `selection_seed`), the same for every caller, so Keras, SavedModel
        and TFLite accuracies on a limited split are measured on the same images.
        TFDS record splits have no random access: None, and callers take the
        first `limit` records.
        """
        if not limit or self.dataset not in sources.BUILTIN_DATASETS:
            return None
        raw = self.raw_split(split)
        count = min(int(limit), raw.num_examples)
        return selection.stratified_draw(raw.num_examples, count, self.selection_seed, selection.SUBSET_SALT, raw.labels)

    def held_out_indices(self) -> np.ndarray:
        """The held-out training examples, in the order `holdout` reads them."""
        if not self.holdout_examples:
            raise ConfigError("holdout_examples", "the run holds no training examples out (it is 0)")
        raw = self.raw_split("train")
        return self.holdout_spec.held_out(raw.num_examples, raw.labels)

    def training_indices(self) -> np.ndarray:
        """The training examples the run trains and calibrates on (indexed sources), ascending."""
        raw = self.raw_split("train")
        return self.holdout_spec.training(raw.num_examples, raw.labels)

    def holdout(self, batch_size: int, limit: int = 0) -> tf.data.Dataset:
        """One ordered pass, with evaluation preprocessing, over the held-out training
        examples (the first `limit` of the draw, itself stratified; 0: all)."""
        indices = self.held_out_indices()
        return self._examples("train", batch_size, indices[:limit] if limit else indices)

    def class_counts(self, held_out_limit: int = 0) -> dict | None:
        """Examples per class in the training part, the held-out set (its first
        `held_out_limit`, if given) and validation.

        None where labels are unknown without decoding (TFDS record datasets).
        """
        train, val = self.raw_split("train"), self.raw_split("val")
        if train.labels is None or val.labels is None:
            return None
        classes = self.info.num_classes
        counts = {
            "training": selection.class_counts(train.labels, self.training_indices(), classes),
            "validation": np.bincount(val.labels, minlength=classes)[:classes],
        }
        if self.holdout_examples:
            held = self.held_out_indices()
            counts["held_out"] = selection.class_counts(train.labels, held[:held_out_limit or None], classes)
        return counts

    def class_warnings(self, held_out_limit: int = 0) -> dict[str, str]:
        """`selection.class_balance_warnings` for this run's splits (none if labels are unknown)."""
        counts = self.class_counts(held_out_limit)
        return {} if counts is None else selection.class_balance_warnings(counts, self.class_names())

    def class_names(self) -> list[str]:
        """A name per label: the folder names of an image folder, else the label."""
        if self.dataset == "imagefolder":
            names = list(sources.imagefolder_classes(self.data_dir))
        else:
            names = [str(i) for i in range(self.info.num_classes if not self.classes else max(self.classes) + 1)]
        return [names[c] for c in self.classes] if self.classes else names

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
            spread = self.training_indices()
            return self._examples("train", batch_size, [spread[i * available // examples] for i in range(examples)])
        dataset = pipeline.load(split="train", batch_size=batch_size, training=False, **self._options())
        return dataset.unbatch().take(examples).batch(batch_size)

    def _examples(self, split: str, batch_size: int, indices) -> tf.data.Dataset:
        return pipeline.load(split=split, batch_size=batch_size, training=False, examples=indices, **self._options())

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
        images.set_shape(images.shape[:-1].concatenate([channels]))  # Normalisation reads the channel count.
        x = preprocessing.eval_resize_and_crop(images, self.image_size, self.crop_fraction)
        return preprocessing.normalize(x, self.normalization)

    def raw_split(self, split: str):
        """The undecoded-to-network split: uint8 images as the dataset stores them (labels too, where known)."""
        _, raw = sources.open_split(
            self.dataset, self.data_dir, split, self.image_size, channels=self.info.channels, synthetic=self.synthetic,
            classes=self.classes,
        )
        return raw


def calibration_stream(run_config, data):
    """The training batches a run calibrates BN on (`run_config`, a TrainConfig; `data`, its
    DataSettings): the same ones for every subnet, held-out examples never among them."""
    batch_size = min(run_config.optimization.global_batch_size, run_config.evaluation.eval_batch_size)
    return data.training(batch_size, seed=run_config.runtime.seed + 1)
