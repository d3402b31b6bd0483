"""A group pass under tf.distribute with synchronized batch norm (in a subprocess:
the two logical CPUs must be configured before TensorFlow starts)."""

import subprocess
import sys

from support import subprocess_env

TOLERANCE = 1e-11  # float64, relative to the largest value compared; seen: 2e-13

_SCRIPT = r"""
import random
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
keras.config.set_floatx("float64")  # exact arithmetic isolates the algorithm from rounding
from pss_tf import SearchSpace, build_supernet
from pss_tf.supernet import encode_group

N, REPLICAS, ROWS, CLASSES = 3, 2, 2, 5  # slices, replicas, rows per slice on each replica
space = SearchSpace("mobilenet_v1", 32, 32, 8, 0.3, 1.0)
rng = random.Random(11)
group = tf.constant(encode_group([space.random_config(rng) for _ in range(N)]))
images = tf.random.stateless_uniform([REPLICAS, N, ROWS, 32, 32, 3], seed=[1, 2], minval=-1, maxval=1, dtype=tf.float64)
labels = tf.random.stateless_uniform([REPLICAS, N, ROWS], seed=[3, 4], maxval=CLASSES, dtype=tf.int32)
# Replica r splits its own batch into N slices, and subnet i's statistics are summed over
# every replica's slice i: on one device, that is the global batch arranged slice by slice.
local = [(tf.reshape(images[r], [N * ROWS, 32, 32, 3]), tf.reshape(labels[r], [-1])) for r in range(REPLICAS)]
one_images = tf.reshape(tf.transpose(images, [1, 0, 2, 3, 4, 5]), [N * REPLICAS * ROWS, 32, 32, 3])
one_labels = tf.reshape(tf.transpose(labels, [1, 0, 2]), [-1])


def randomise(net):
    values = np.random.default_rng(5)
    for layer in net.batch_norm_layers():
        layer.gamma.assign(values.uniform(0.5, 1.5, layer.channels))
        layer.beta.assign(values.normal(0.0, 0.5, layer.channels))
    net.classifier.kernel.assign(values.normal(0.0, 0.3, net.classifier.kernel.shape))


def make_step(net):
    def replica_step(x, y):
        with tf.GradientTape() as tape:
            logits = net(x, group, training=True)
            ce = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            loss = tf.reduce_sum(ce) / (REPLICAS * ROWS)  # the sum of each slice's global mean
        return logits, tape.gradient(loss, net.trainable_variables)
    return replica_step


results = []
for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        net = build_supernet("mobilenet_v1", num_classes=CLASSES, small_input=True, synchronized_bn=True)
    randomise(net)
    step = make_step(net)
    if strategy.num_replicas_in_sync == 1:
        logits, grads = tf.function(step)(one_images, one_labels)
        logits = logits.numpy().reshape(N, REPLICAS, ROWS, -1)
    else:
        values = strategy.experimental_distribute_values_from_function(lambda ctx: local[ctx.replica_id_in_sync_group])
        logits, grads = tf.function(lambda v: strategy.run(step, args=v))(values)
        grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
        per_replica = [t.numpy().reshape(N, ROWS, -1) for t in strategy.experimental_local_results(logits)]
        logits = np.stack(per_replica, axis=1)  # (N, REPLICAS, ROWS, classes): the one-device order
    results.append((logits, [g.numpy() for g in grads], strategy.num_replicas_in_sync))
(one, one_grads, n1), (two, two_grads, n2) = results
assert (n1, n2) == (1, 2), (n1, n2)
assert np.abs(one).max() > 0.1
scale = max(1.0, max(float(np.abs(g).max()) for g in one_grads))
print("LOGITS", float(np.abs(one - two).max()) / max(1.0, float(np.abs(one).max())))
print("GRADS", max(float(np.abs(a - b).max()) for a, b in zip(one_grads, two_grads)) / scale)
"""


def test_synchronized_group_pass_over_two_replicas_equals_one_device(tmp_path):
    """MirroredStrategy over 2 logical CPUs, synchronized BN, float64: a group pass of 3
    subnets on a global batch equals one device on the same batch (each slice's statistics
    summed over replicas, two-pass), logits and gradients summed over replicas."""
    script = tmp_path / "mirrored_group.py"
    script.write_text(_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=subprocess_env(), timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = dict(line.split() for line in result.stdout.splitlines() if line.startswith(("LOGITS", "GRADS")))
    assert float(values["LOGITS"]) < TOLERANCE, values
    assert float(values["GRADS"]) < TOLERANCE, values
