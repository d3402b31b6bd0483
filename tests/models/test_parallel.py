"""Group passes (PSE-Net's parallel subnets): N subnets on N slices of one batch.

The claim under test: a group pass computes exactly what N separate subnet
passes on the same slices compute, logits, per-slice losses and gradients
included. Checked in float64, where the two differ only by the order of
floating-point reductions: the largest differences seen, relative to the
largest value compared (or absolute below 1), are 3e-15 for logits and losses
and 5e-14 for gradients; a group of one equals the single-subnet pass bit for
bit. The tests allow TOLERANCE = 1e-11. The negative tests show that the two
"simplifications" (whole-batch statistics: errors of 0.7 in logits and 1.2 in
gradients; a mask before batch norm only: 0.3 and 0.4) are not exact.
The same pass under tf.distribute: test_parallel_mirrored.py.
"""

import dataclasses
import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from pss_tf import SearchSpace, SubnetConfig, build_supernet
from pss_tf.models import blocks, layers
from pss_tf.models.layers import SlimBatchNormalization
from pss_tf.supernet import encode, encode_group

TOLERANCE = 1e-11  # float64, relative (see `_error`); seen: 5e-14 or less
NUM_CLASSES = 5
RESOLUTION = 32  # small_input: 2x2 maps in the last stage
ROWS = 2  # images per slice
# ResNet-50 at a quarter of its width: the same blocks and shortcuts, a 16th of the work.
MODELS = (
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v2_layerwise", "resnet50_0.25x", "resnet50_layerwise_0.25x",
    "mobilenet_v3_small", "mobilenet_v3_large_layerwise",  # squeeze-and-excite, hard-swish, a hidden head layer
)


def _randomise(supernet, seed):
    """Random gamma, beta (not 1 and 0) and classifier, so that a missing mask or a wrong
    statistic cannot hide behind trivial parameters; conv kernels keep their random init."""
    rng = np.random.default_rng(seed)
    for layer in supernet.batch_norm_layers():
        n = layer.channels
        layer.gamma.assign(rng.uniform(0.5, 1.5, n))
        layer.beta.assign(rng.normal(0.0, 0.5, n))
        layer.moving_mean.assign(rng.normal(0.0, 0.1, n))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
    classifier = supernet.classifier
    classifier.kernel.assign(rng.normal(0.0, 0.3, classifier.kernel.shape))
    classifier.bias.assign(rng.normal(0.0, 0.1, classifier.bias.shape))
    for layer in supernet.slim_layers():  # Squeeze-and-excite's convs, MobileNetV3's hidden head layer.
        if hasattr(layer, "bias") and layer is not classifier:
            layer.kernel.assign(rng.normal(0.0, 0.3, layer.kernel.shape))
            layer.bias.assign(rng.normal(0.0, 0.5, layer.bias.shape))


@pytest.fixture(scope="module")
def float64_supernets():
    """MobileNetV1 and V2 built in float64; floatx and the dtype policy (which Keras
    caches from floatx) are restored at once, the nets keep float64."""
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(0)
        nets = {}
        for i, model in enumerate(MODELS):
            nets[model] = build_supernet(model, num_classes=NUM_CLASSES, small_input=True, in_channels=3)
            _randomise(nets[model], seed=i)
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)
    for net in nets.values():
        assert net.compute_dtype == "float64"
    return nets


def _group_configs(model, n, seed):
    """n random, pairwise different configs at one resolution, widths 0.3..1.0."""
    space = SearchSpace(model, RESOLUTION, RESOLUTION, 8, 0.3, 1.0)
    rng = random.Random(seed)
    configs = [space.random_config(rng) for _ in range(n)]
    assert len(set(configs)) == n
    return configs


def _batch(n, seed, dtype=tf.float64):
    images = tf.random.stateless_uniform([n * ROWS, 36, 36, 3], seed=[seed, 1], minval=-1, maxval=1, dtype=dtype)
    labels = tf.random.stateless_uniform([n * ROWS], seed=[seed, 2], maxval=NUM_CLASSES, dtype=tf.int32)
    return images, labels


def _slice_losses(logits, labels, n):
    """Each slice's mean cross-entropy, (n,)."""
    losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return tf.reduce_mean(tf.reshape(losses, [n, -1]), axis=1)


def _dense(gradients, variables):
    return [np.zeros(v.shape) if g is None else tf.convert_to_tensor(g).numpy() for g, v in zip(gradients, variables)]


def _group_pass(supernet, images, labels, group, training=True):
    """Logits, per-slice losses, gradients of their sum and of slice 0's loss alone."""
    n = int(tf.shape(group)[0])
    variables = supernet.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        logits = supernet(images, group, training=training)
        losses = _slice_losses(logits, labels, n)
        total = tf.reduce_sum(losses)
        first = losses[0]
    gradients = _dense(tape.gradient(total, variables), variables)
    first = _dense(tape.gradient(first, variables), variables)
    return logits.numpy(), losses.numpy(), gradients, first


def _separate_passes(supernet, images, labels, configs, training=True):
    """Each subnet on its own slice (its own forward and backward): logits in batch
    order, per-slice losses, each pass's gradients."""
    n = len(configs)
    variables = supernet.trainable_variables
    logits, losses, gradients = [], [], []
    for i, config in enumerate(configs):
        rows = slice(i * ROWS, (i + 1) * ROWS)
        with tf.GradientTape() as tape:
            out = supernet(images[rows], tf.constant(encode(config)), training=training)
            loss = _slice_losses(out, labels[rows], 1)[0]
        logits.append(out.numpy())
        losses.append(float(loss))
        gradients.append(_dense(tape.gradient(loss, variables), variables))
    assert len(losses) == n
    return np.concatenate(logits), np.array(losses), gradients


def _error(got, want):
    """Largest absolute difference over a list of arrays, relative to the largest
    |value| of `want` when that exceeds 1 (gradients of the stem reach hundreds)."""
    scale = max(1.0, max(float(np.max(np.abs(w))) for w in want))
    error = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want)) / scale
    return error


ERRORS_SEEN = []


def _used_regions(supernet, configs):
    """Per trainable variable, a boolean mask of the entries any of `configs` uses:
    the union of each subnet's leading block (`Supernet.subnet_weights` shapes)."""
    masks = {}
    for config in configs:
        for name, arrays in supernet.subnet_weights(config).items():
            if name in ("classifier", "head_hidden"):
                layer = getattr(supernet, name)
            else:
                block, part = name.split("_", 1)
                (layer,) = [l for l in getattr(supernet, block).slim_layers() if l.name == part]
            for variable, array in zip(layer.weights, arrays):
                mask = masks.setdefault(variable.path, np.zeros(variable.shape, bool))
                mask[tuple(slice(n) for n in array.shape)] = True
    return [masks[v.path] for v in supernet.trainable_variables]


@pytest.fixture
def block_outputs(monkeypatch):
    """Records every block's output (in call order) while the test runs."""
    records = []
    for cls in blocks.SlimBlock.__subclasses__():
        original = cls.call

        def recording(self, *args, _original=original, **kwargs):
            outputs = _original(self, *args, **kwargs)
            records.append(outputs)
            return outputs

        monkeypatch.setattr(cls, "call", recording)
    return records


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("model", MODELS)
def test_group_pass_equals_separate_passes(float64_supernets, block_outputs, model, n):
    """Logits, per-slice cross-entropies and the gradient of every trainable variable of
    one group pass equal N separate training passes on the same slices (sum of their
    gradients); every block's output is exactly zero in the channels a slice's subnet
    lacks; gradients are exactly zero wherever no subnet reaches, and slice 0's loss
    alone gives exactly zero gradient wherever subnet 0 does not reach."""
    supernet = float64_supernets[model]
    configs = _group_configs(model, n, seed=10 * n + len(model))
    images, labels = _batch(n, seed=n)
    logits, losses, gradients, first = _group_pass(supernet, images, labels, tf.constant(encode_group(configs)))
    probes = list(block_outputs)
    expected_logits, expected_losses, separate = _separate_passes(supernet, images, labels, configs)
    expected_gradients = [sum(g) for g in zip(*separate)]

    assert np.abs(expected_logits).max() > 0.1  # not a comparison of near-zero tensors
    assert _error([logits], [expected_logits]) < TOLERANCE
    assert _error([losses], [expected_losses]) < TOLERANCE
    assert max(float(np.abs(g).max()) for g in expected_gradients) > 1e-3
    assert _error(gradients, expected_gradients) < TOLERANCE
    assert _error(first, separate[0]) < TOLERANCE
    # Entries no subnet of the group uses (gamma and beta of channels none has; kernel
    # entries between an input channel of one subnet and an output channel of another)
    # get exactly zero gradient, as do the entries subnet 0 lacks from slice 0's loss.
    for variable, used, used_first, got, got_first in zip(
        supernet.trainable_variables, _used_regions(supernet, configs), _used_regions(supernet, configs[:1]),
        gradients, first,
    ):
        assert not got[~used].any(), variable.path
        assert not got_first[~used_first].any(), variable.path

    # Block outputs: slice i's rows hold zeros beyond subnet i's channels, and only there.
    architecture = supernet.architecture
    assert len(probes) == len(architecture.blocks)
    tables = [architecture.channel_table(c.channels) for c in configs]
    for spec, output in zip(architecture.blocks, probes):
        output = output.numpy()
        widest = max(t[spec.out_stage] for t in tables)
        assert output.shape[-1] == widest  # the layer runs at the group's widest width
        for i, table in enumerate(tables):
            rows = output[i * ROWS : (i + 1) * ROWS]
            assert not rows[..., table[spec.out_stage] :].any(), (spec, i)
            assert rows[..., : table[spec.out_stage]].any()

    if n == 2:  # inference (moving statistics) masks the same way
        logits, _, _, _ = _group_pass(supernet, images, labels, tf.constant(encode_group(configs)), training=False)
        expected, _, _ = _separate_passes(supernet, images, labels, configs, training=False)
        assert _error([logits], [expected]) < TOLERANCE


@pytest.mark.parametrize("model", MODELS)
def test_group_of_one_equals_the_single_subnet_pass(float64_supernets, model):
    supernet = float64_supernets[model]
    (config,) = _group_configs(model, 1, seed=5)
    images, labels = _batch(2, seed=7)
    variables = supernet.trainable_variables
    results = []
    for encoded in (encode_group([config]), encode(config)):
        with tf.GradientTape() as tape:
            logits = supernet(images, tf.constant(encoded), training=True)
            loss = _slice_losses(logits, labels, 1)[0]
        results.append((logits.numpy(), float(loss), _dense(tape.gradient(loss, variables), variables)))
    (group_logits, group_loss, group_grads), (logits, loss, grads) = results
    assert _error([group_logits], [logits]) < TOLERANCE
    assert group_loss == pytest.approx(loss, abs=TOLERANCE)
    assert _error(group_grads, grads) < TOLERANCE


def _simplified_call_slices(what):
    """`SlimBatchNormalization._call_slices` (training, float64's moments path) "simplified"
    as `what` says: whole-batch statistics mix the slices' subnets; a mask before the
    normalisation alone leaves beta (and the normalised zeros) in the channels a slice's
    subnet lacks, which the next layer then reads."""

    def call_slices(self, inputs, slice_channels, training, calibration_rate):
        channels = layers.input_channels(inputs)
        slice_channels = tf.convert_to_tensor(slice_channels, tf.int32)
        slices = layers.dimension(slice_channels, 0)
        mask = tf.sequence_mask(slice_channels, channels, dtype=self.gamma.dtype)
        gamma, beta = self.gamma[:channels][None, :], self.beta[:channels][None, :]
        x = layers._split_slices(inputs, slices)  # (N, b, H, W, C)
        if what == "whole-batch statistics":
            gamma, beta, axes = gamma * mask, beta * mask, [0, 1, 2, 3]
        else:
            x = x * tf.cast(mask, x.dtype)[:, None, None, None, :]
            gamma, beta, axes = tf.tile(gamma, [slices, 1]), tf.tile(beta, [slices, 1]), [1, 2, 3]
        mean, variance = self._statistics(x, axes=axes, keepdims=True)
        y = self._normalize(x, mean, variance, gamma[:, None, None, None, :], beta[:, None, None, None, :])
        return tf.reshape(y, tf.shape(inputs))

    return call_slices


@pytest.mark.parametrize("what", ["whole-batch statistics", "a mask before batch norm only"])
def test_simplified_group_passes_are_not_exact(float64_supernets, monkeypatch, what):
    """Guards against "simplifying" the group pass: with statistics of the whole batch
    instead of each slice's, or with the channel mask applied to the batch norm's input
    instead of its output (beta makes the zeroed channels non-zero again), logits and
    gradients differ from separate passes by far more than TOLERANCE."""
    supernet = float64_supernets["mobilenet_v1"]
    configs = _group_configs("mobilenet_v1", 2, seed=3)
    images, labels = _batch(2, seed=4)
    group = tf.constant(encode_group(configs))
    expected_logits, _, separate = _separate_passes(supernet, images, labels, configs)
    expected_gradients = [sum(g) for g in zip(*separate)]
    exact_logits, _, _, _ = _group_pass(supernet, images, labels, group)
    assert _error([exact_logits], [expected_logits]) < TOLERANCE

    monkeypatch.setattr(SlimBatchNormalization, "_call_slices", _simplified_call_slices(what))
    logits, _, gradients, _ = _group_pass(supernet, images, labels, group)
    assert _error([logits], [expected_logits]) > 1e-3, what
    assert _error(gradients, expected_gradients) > 1e-3, what


def test_one_trace_serves_every_group_of_the_same_size(float64_supernets):
    supernet = float64_supernets["mobilenet_v2"]
    space = SearchSpace("mobilenet_v2", 24, 40, 8, 0.3, 1.0)
    rng = random.Random(4)

    @tf.function
    def forward(images, group):
        return supernet(images, group, training=True)

    images, _ = _batch(3, seed=5)
    for _ in range(4):
        resolution = rng.choice(space.resolutions)
        configs = [dataclasses.replace(space.random_config(rng), resolution=resolution) for _ in range(3)]
        assert forward(images, tf.constant(encode_group(configs))).shape == (3 * ROWS, NUM_CLASSES)
    assert forward.experimental_get_tracing_count() == 1


def test_bad_groups_are_refused_with_clear_messages(float64_supernets):
    supernet = float64_supernets["mobilenet_v1"]
    a = SubnetConfig.uniform("mobilenet_v1", 32, 0.5)
    with pytest.raises(ValueError, match="share one resolution"):
        encode_group([a, SubnetConfig.uniform("mobilenet_v1", 24, 0.5)])
    with pytest.raises(ValueError, match="one supernet"):
        encode_group([a, SubnetConfig.uniform("mobilenet_v2", 32, 0.5)])
    with pytest.raises(ValueError, match="at least one"):
        encode_group([])
    with pytest.raises(ValueError, match="mobilenet_v2 config given to a mobilenet_v1 supernet"):
        supernet.encode_group([SubnetConfig.uniform("mobilenet_v2", 32, 0.5)] * 2)

    images, _ = _batch(3, seed=1)  # 6 images
    mixed = np.stack([encode(a), encode(SubnetConfig.uniform("mobilenet_v1", 24, 0.5))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="share one resolution"):
        supernet(images, tf.constant(mixed), training=True)
    with pytest.raises(ValueError, match="does not split into 4 equal slices"):
        supernet(images, tf.constant(encode_group([a] * 4)), training=True)
    with pytest.raises(ValueError, match="calibration"):
        supernet(images, tf.constant(encode_group([a] * 2)), calibration_rate=1.0)

    # Inside a traced function, with shapes unknown until it runs.
    unknown = [tf.TensorSpec([None, None, None, 3], tf.float64), tf.TensorSpec([None, 15], tf.int32)]

    @tf.function(input_signature=unknown)
    def forward(images, group):
        return supernet(images, group, training=True)

    assert forward(images, tf.constant(encode_group([a] * 3))).shape == (6, NUM_CLASSES)
    with pytest.raises(tf.errors.InvalidArgumentError, match="share one resolution"):
        forward(images, tf.constant(mixed))
    with pytest.raises(tf.errors.InvalidArgumentError, match="equal slices"):
        forward(images, tf.constant(encode_group([a] * 4)))

    # A list of configs is a group too.
    np.testing.assert_array_equal(
        supernet(images, [a] * 3, training=False).numpy(),
        supernet(images, tf.constant(encode_group([a] * 3)), training=False).numpy(),
    )


def _ghost_outputs_and_gradients(bn, x, counts, upstream, input_signature=None):
    @tf.function(input_signature=input_signature)
    def run(x, counts):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True, slice_channels=counts)
            loss = tf.reduce_sum(y * tf.cast(upstream, y.dtype))
        return y, tape.gradient(loss, [x, bn.gamma, bn.beta])

    y, grads = run(x, counts)
    graph = run.get_concrete_function(x, counts).graph.as_graph_def()
    ops_used = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    return y.numpy(), [g.numpy() for g in grads], ops_used


@pytest.mark.parametrize(
    "layout, static, flat",
    [("split", True, False), ("transpose", True, False), ("split", False, False), ("split", True, True),
     ("split", False, True)],
)
def test_fused_ghost_batch_norm_equals_the_moments_path(monkeypatch, layout, static, flat):
    """float32 training uses fused kernels per slice (`_fused_ghost_batch_norm`; a
    dynamic N takes the transposed layout), on (N * H * W, 1, 1, C) views with `flat`;
    float64 takes the exact moments path. Both give the same outputs (1e-5) and
    gradients, masks included."""
    if layout == "transpose":  # The one-kernel layout a dynamic N takes, for a static N too.
        monkeypatch.setattr(layers, "_ghost_per_slice_kernels", layers._ghost_side_by_side)
    n, channels = 4, 12
    exact = SlimBatchNormalization(channels, dtype="float64")
    exact.build()
    rng = np.random.default_rng(0)
    exact.gamma.assign(rng.uniform(0.5, 1.5, channels))
    exact.beta.assign(rng.normal(0.0, 0.5, channels))
    fused = SlimBatchNormalization(channels, flat_kernel=flat)
    fused.build()
    fused.set_weights([w.astype("float32") for w in exact.get_weights()])
    x = tf.random.stateless_normal([n * 3, 5, 5, 10], seed=[6, 6], mean=1.0, stddev=2.0, dtype=tf.float64)
    upstream = tf.random.stateless_normal([n * 3, 5, 5, 10], seed=[7, 7], dtype=tf.float64)
    counts = tf.constant([10, 4, 8, 6])
    signature = None if static else [tf.TensorSpec([None, 5, 5, 10], tf.float32), tf.TensorSpec([None], tf.int32)]

    exact_y, exact_grads, exact_ops = _ghost_outputs_and_gradients(exact, x, counts, upstream)
    fused_y, fused_grads, fused_ops = _ghost_outputs_and_gradients(
        fused, tf.cast(x, tf.float32), counts, upstream, signature
    )
    assert "FusedBatchNormV3" in fused_ops and "FusedBatchNormV3" not in exact_ops
    np.testing.assert_allclose(fused_y, exact_y, atol=1e-5)
    for fused_grad, exact_grad in zip(fused_grads, exact_grads):
        np.testing.assert_allclose(fused_grad, exact_grad, rtol=1e-4, atol=1e-4)
    for i, count in enumerate(counts.numpy()):
        assert not fused_y[3 * i : 3 * i + 3, ..., count:].any()  # masked exactly
        assert not fused_grads[0][3 * i : 3 * i + 3, ..., count:].any()
    assert not fused_grads[1][10:].any() and not fused_grads[2][10:].any()


def test_mixed_precision_group_pass(block_outputs):
    """Under mixed_float16 a group pass computes in float16 (fused per-slice batch norm),
    masks exactly, returns float32 logits and finite gradients, and differs from the
    separate float16 passes by less than float16 itself differs from float32 (this tiny
    net's batch norms over 2x2 maps amplify float16 rounding to about 0.5 in logits)."""
    nets = {}
    policy = keras.config.dtype_policy()
    try:
        for name in ("float32", "mixed_float16"):
            keras.config.set_dtype_policy(name)
            nets[name] = build_supernet("mobilenet_v1", num_classes=NUM_CLASSES, small_input=True)
    finally:
        keras.config.set_dtype_policy(policy)
    _randomise(nets["float32"], seed=3)
    supernet = nets["mixed_float16"]
    supernet.set_weights(nets["float32"].get_weights())
    configs = _group_configs("mobilenet_v1", 2, seed=8)
    images, labels = _batch(2, seed=9, dtype=tf.float32)
    with tf.GradientTape() as tape:
        logits = supernet(images, tf.constant(encode_group(configs)), training=True)
        loss = tf.reduce_sum(_slice_losses(logits, labels, 2))
    gradients = tape.gradient(loss, supernet.trainable_variables)
    assert logits.dtype == tf.float32
    assert all(np.isfinite(g.numpy()).all() for g in gradients)
    tables = [supernet.architecture.channel_table(c.channels) for c in configs]
    for spec, output in zip(supernet.architecture.blocks, block_outputs[: len(supernet.architecture.blocks)]):
        assert output.dtype == tf.float16
        for i, table in enumerate(tables):
            assert not output.numpy()[i * ROWS : (i + 1) * ROWS, ..., table[spec.out_stage] :].any()

    def separate(net):
        slices = [net(images[i * ROWS : (i + 1) * ROWS], configs[i], training=True) for i in range(2)]
        return np.concatenate([s.numpy() for s in slices])

    half, full = separate(supernet), separate(nets["float32"])
    assert np.abs(logits.numpy() - half).max() <= np.abs(half - full).max()
