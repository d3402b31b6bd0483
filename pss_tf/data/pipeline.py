"""tf.data input pipelines: single-device `load` and distributed `make_input_fn`.

Training streams are infinite and a pure function of (dataset, seed, position):
element `k` of the stream (counting from the first example of step 0, across
all replicas) is always the same example with the same augmentation. So a run
resumed at step `s` passes `start_step=s` and sees exactly the batches the
uninterrupted run would have seen from step `s` on, at the cost of:

* nothing, for indexed sources (synthetic, Fashion-MNIST, image folders):
  epoch `e` visits the examples in the order `index_shuffle(., seed, e)`, so the
  stream starts directly at position `s * global_batch_size`;
* reading (not decoding) at most one epoch of records, for TFDS sources: each
  epoch reshuffles its shard order and a shuffle buffer from (seed, epoch), so
  only the current epoch is replayed. (`Dataset.shuffle` also mixes in a global
  seed if `tf.random.set_seed` was called: a resumed run must set the same one.)

The global stream does not depend on how many replicas or input pipelines read
it (TFDS excepted when there are several pipelines), so a resumed run may use
different hardware.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

from pss_tf.data import preprocessing, selection, sources

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_SHUFFLE_BUFFER = 10_000
_INTERLEAVE_CYCLE = 16
_ENDLESS = 2**62
# Map functions run without autograph: they branch in Python on static values
# only, and converting them cost about a second per pipeline built.
_plain = tf.autograph.experimental.do_not_convert

# Salts that keep the shuffle and augmentation random streams apart.
_SHUFFLE_SALT = 0
_AUGMENT_SALT = 1


@dataclasses.dataclass(frozen=True)
class _Preprocess:
    image_size: int
    channels: int
    training: bool
    crop_scale: tuple[float, float]
    flip: bool
    crop_fraction: float
    color_jitter: float
    lighting: float
    normalization: str

    def __call__(self, image, label, seed=None):
        if self.training:
            image = preprocessing.preprocess_for_train(
                image, self.image_size, seed, self.crop_scale, self.flip, self.color_jitter, self.lighting,
                self.normalization, channels=self.channels,
            )
        else:
            image = preprocessing.preprocess_for_eval(
                image, self.image_size, self.crop_fraction, self.normalization, channels=self.channels
            )
        image = tf.ensure_shape(image, [self.image_size, self.image_size, self.channels])
        return image, tf.cast(label, tf.int32)


def _key(seed: int, salt: int) -> tf.Tensor:
    return tf.constant([seed, salt], tf.int64)


def _fold(key: tf.Tensor, value) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))


def _indexed_train_stream(raw: sources.IndexedSplit, prep: _Preprocess, seed, start, pipelines, train_indices=None):
    """Positions start, start+P, ... of the global stream, for pipeline `p` of `P`.

    Each epoch is a permutation of the split, or of `train_indices` (the
    examples left once a run holds some out) when given.
    """
    num_pipelines, pipeline_id = pipelines
    n = raw.num_examples if train_indices is None else len(train_indices)
    # Encoded files go to the augmentation undecoded: it decodes only a JPEG's crop window.
    fetch = (raw.make_fetch_encoded or raw.make_fetch)()
    shuffle_key, augment_key = _key(seed, _SHUFFLE_SALT), _key(seed, _AUGMENT_SALT)
    kept = None if train_indices is None else tf.constant(train_indices, tf.int64)

    def example(position):
        epoch, offset = position // n, position % n
        index = tf.random.experimental.index_shuffle(offset, _fold(shuffle_key, epoch), n - 1)
        if kept is not None:
            index = tf.gather(kept, index)
        image, label = fetch(index)
        return prep(image, label, _fold(augment_key, position))

    positions = tf.data.Dataset.range(start + pipeline_id, _ENDLESS, num_pipelines)
    return positions.map(_plain(example), num_parallel_calls=AUTOTUNE, deterministic=True)


def _indexed_eval_stream(raw: sources.IndexedSplit, prep: _Preprocess, pipelines, examples=None):
    """Every example in order, or the `examples` (indices) in their order.

    Encoded files go to the preprocessing undecoded: of a JPEG it decodes and
    resamples only what the centre crop reads (`preprocessing.decode_eval_crop`).
    """
    num_pipelines, pipeline_id = pipelines
    fetch = (raw.make_fetch_encoded or raw.make_fetch)()
    if examples is None:
        indices = tf.data.Dataset.range(pipeline_id, raw.num_examples, num_pipelines)
    else:
        indices = tf.data.Dataset.from_tensor_slices(tf.constant(examples, tf.int64)).shard(num_pipelines, pipeline_id)
    return indices.map(_plain(lambda i: prep(*fetch(i))), num_parallel_calls=AUTOTUNE, deterministic=True)


def _shard_records(raw: sources.RecordSplit, pipelines):
    """Gives each pipeline whole files when there are enough, else every P-th record."""
    num_pipelines, pipeline_id = pipelines
    files, lengths = list(raw.files), list(raw.shard_lengths)
    if num_pipelines == 1 or len(files) >= num_pipelines:
        return files[pipeline_id::num_pipelines], sum(lengths[pipeline_id::num_pipelines]), None
    total = sum(lengths)
    count = len(range(pipeline_id, total, num_pipelines))
    return files, count, pipelines


def _read_records(files: tf.Tensor, num_files: int, record_shard) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(_INTERLEAVE_CYCLE, num_files),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return ds.shard(*record_shard) if record_shard else ds


def _record_train_stream(raw: sources.RecordSplit, prep, seed, start, pipelines, shuffle_buffer):
    """Epoch `e` reads the shards in an order and through a buffer seeded by (seed, e).

    Each pipeline has a stream of its own; every step takes an equal share,
    `1/P` of the global batch, from each, so this one starts at `start // P`.
    """
    files, n, record_shard = _shard_records(raw, pipelines)
    start //= pipelines[0]
    if n == 0:
        raise ValueError(f"input pipeline {pipelines[1]} of {pipelines[0]} has no examples")
    files_t = tf.constant(files)
    shuffle_key = _fold(_key(seed, _SHUFFLE_SALT), pipelines[1])
    augment_key = _fold(_key(seed, _AUGMENT_SALT), pipelines[1])

    def epoch_records(epoch):
        epoch_key = _fold(shuffle_key, epoch)
        order = tf.random.experimental.stateless_shuffle(tf.range(len(files)), epoch_key)
        records = _read_records(tf.gather(files_t, order), len(files), record_shard)
        buffer_seed = tf.random.stateless_uniform(
            [], epoch_key, minval=None, maxval=None, dtype=tf.int64
        )
        records = records.shuffle(shuffle_buffer, seed=buffer_seed, reshuffle_each_iteration=False)
        return tf.data.Dataset.zip(tf.data.Dataset.range(epoch * n, (epoch + 1) * n), records)

    first_epoch, offset = divmod(start, n)
    stream = tf.data.Dataset.range(first_epoch, _ENDLESS).flat_map(_plain(epoch_records)).skip(offset)

    parse = raw.parse_encoded or raw.parse  # Encoded: only a JPEG's crop window is decoded.

    def example(position, record):
        return prep(*parse(record), _fold(augment_key, position))

    return stream.map(_plain(example), num_parallel_calls=AUTOTUNE, deterministic=True)


def _record_eval_stream(raw: sources.RecordSplit, prep, pipelines):
    files, _, record_shard = _shard_records(raw, pipelines)
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(files)).flat_map(tf.data.TFRecordDataset)
    if record_shard:
        ds = ds.shard(*record_shard)
    parse = raw.parse_encoded or raw.parse  # Encoded: a JPEG is decoded only where the crop reads.
    return ds.map(_plain(lambda r: prep(*parse(r))), num_parallel_calls=AUTOTUNE, deterministic=True)


def _build(raw, prep: _Preprocess, batch_size, seed, start, pipelines, shuffle_buffer, train_indices=None, examples=None):
    indexed = isinstance(raw, sources.IndexedSplit)
    if prep.training and indexed:
        ds = _indexed_train_stream(raw, prep, seed, start, pipelines, train_indices)
    elif prep.training:
        ds = _record_train_stream(raw, prep, seed, start, pipelines, shuffle_buffer)
    elif indexed:
        ds = _indexed_eval_stream(raw, prep, pipelines, examples)
    else:
        ds = _record_eval_stream(raw, prep, pipelines)
    ds = ds.batch(batch_size, drop_remainder=prep.training)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)


def _validate(image_size, batch_size, training, start_step, crop_scale, crop_fraction):
    if image_size < 1:
        raise ValueError(f"image_size: must be positive, got {image_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be positive, got {batch_size}")
    if start_step < 0:
        raise ValueError(f"start_step: must be >= 0, got {start_step}")
    if start_step and not training:
        raise ValueError("start_step: only training streams resume; evaluation is one pass")
    low, high = crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_scale: need 0 < low <= high <= 1, got {crop_scale}")
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction: must lie in (0, 1], got {crop_fraction}")


def make_input_fn(
    name: str,
    data_dir: str | None,
    split: str,
    image_size: int,
    global_batch_size: int,
    training: bool,
    seed: int = 0,
    *,
    start_step: int = 0,
    crop_scale: tuple[float, float] = preprocessing.DEFAULT_CROP_SCALE,
    flip: bool = True,
    crop_fraction: float = preprocessing.DEFAULT_CROP_FRACTION,
    color_jitter: float = 0.0,
    lighting: float = 0.0,
    normalization: str = "imagenet",
    channels: int | None = None,
    synthetic: sources.SyntheticSpec | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    holdout: selection.Holdout | None = None,
    examples=None,
    classes: tuple[int, ...] = (),
) -> Callable[[tf.distribute.InputContext | None], tf.data.Dataset]:
    """Returns `fn(input_context)` for `strategy.distribute_datasets_from_function`.

    Each input pipeline reads its share of the stream (every P-th example) and
    batches at the per-replica batch size. Training streams repeat forever and
    drop partial batches; `start_step` resumes them (see the module docstring).
    Evaluation streams are one ordered pass, last batch possibly partial.
    The dataset is checked (and, for in-memory sources, loaded) here, once.

    Held-out data (indexed splits only): a training stream with `holdout`
    (a `selection.Holdout`) never visits the examples it holds out; an
    evaluation stream with `examples` (indices) passes over those examples
    only, in that order (`Holdout.held_out` gives the held-out ones).
    `classes` keeps only those classes' examples, relabelled 0..k-1.
    """
    _validate(image_size, global_batch_size, training, start_step, crop_scale, crop_fraction)
    info, raw = sources.open_split(
        name, data_dir, split, image_size, channels=channels, synthetic=synthetic, classes=classes
    )
    train_indices, examples = _check_held_out(raw, training, holdout, examples)
    prep = _Preprocess(
        image_size, info.channels, training, tuple(crop_scale), flip, crop_fraction, color_jitter, lighting,
        normalization,
    )

    def input_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        if input_context is None:
            pipelines, batch_size = (1, 0), global_batch_size
        else:
            pipelines = (input_context.num_input_pipelines, input_context.input_pipeline_id)
            batch_size = input_context.get_per_replica_batch_size(global_batch_size)
        start = start_step * global_batch_size
        return _build(raw, prep, batch_size, seed, start, pipelines, shuffle_buffer, train_indices, examples)

    input_fn.info = info
    return input_fn


def load(
    name: str,
    data_dir: str | None,
    split: str,
    image_size: int,
    batch_size: int,
    training: bool,
    seed: int = 0,
    **kwargs,
) -> tf.data.Dataset:
    """One-device pipeline (evaluation, BN calibration, TFLite representative data).

    Takes the keyword options of `make_input_fn`; `load(...)` is the stream
    `make_input_fn(...)(None)`.
    """
    input_fn = make_input_fn(
        name, data_dir, split, image_size, batch_size, training, seed, **kwargs
    )
    return input_fn(None)


def steps_per_epoch(info: sources.DatasetInfo, global_batch_size: int, holdout_examples: int = 0) -> int:
    """Full training batches in one pass over the training split, held-out examples excluded."""
    return (info.num_train - holdout_examples) // global_batch_size


def _check_held_out(raw, training: bool, holdout, examples):
    """(the training indices a held-out set leaves, or None; the checked `examples`)."""
    if holdout is not None and not isinstance(holdout, selection.Holdout):
        raise TypeError(f"holdout: expected a pss_tf.data.selection.Holdout, got {type(holdout).__name__}")
    indexed = isinstance(raw, sources.IndexedSplit)
    train_indices = None
    if holdout:
        if not training:
            raise ValueError("holdout_examples: only training streams leave examples out; pass `examples` to read them")
        if not indexed:
            raise ValueError(
                "holdout_examples: record (TFDS) splits are streamed in shard order and cannot hold examples out"
            )
        if holdout.examples >= raw.num_examples:
            raise ValueError(
                f"holdout_examples: {holdout.examples} leaves none of the split's {raw.num_examples} examples "
                f"to train on"
            )
        train_indices = holdout.training(raw.num_examples, raw.labels)
    if examples is not None:
        if training:
            raise ValueError("examples: only evaluation streams read chosen examples")
        if not indexed:
            raise ValueError("examples: record (TFDS) splits have no random access by index")
        examples = [int(i) for i in examples]
        if any(not 0 <= i < raw.num_examples for i in examples):
            raise ValueError(f"examples: indices must lie in [0, {raw.num_examples})")
    return train_indices, examples
