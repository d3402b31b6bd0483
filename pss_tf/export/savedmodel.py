"""The serving SavedModel: one signature per subnet, a default, and adaptive ones.

Every signature takes what a client has, a batch of uint8 `images` (any size
for serving, a fixed size for TFLite), and prepares them in the graph exactly
as evaluation did (`DataSettings.prepare_batch`). Outputs are `probabilities` (softmax) and
`classes` (argmax, int64).

`adaptive` signatures take a `budget` beside the images, in the unit of their
metric (M MACs for flops), and run the most accurate subnet whose value fits it
(the Pareto front's largest member that fits, `subnets.candidates`), or the
smallest when none does: one model that adapts to the resources at each
request. The choice is a `tf.switch_case` in the graph. A request carries one
budget; a batch whose instances carry several runs the subnet that fits the
smallest. They also return which subnet ran (`subnet_name`, `subnet_value`,
one per image so that TF Serving's row format can split them).

The SavedModel is a `tf.Module` that tracks the models' variables (the
tf.Variables inside the Keras variables), not the Keras models: tracking
Keras 3 models from a `tf.Module` saves their variables in a form the TFLite
converter cannot freeze (they stay resource variables in the flatbuffer), and
saves far more than the signatures need.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pss_tf.export import subnets as subnets_lib

SERVING_DEFAULT = "serving_default"
ADAPTIVE = "adaptive"
IMAGES = "images"
BUDGET = "budget"
OUTPUTS = ("probabilities", "classes")
ADAPTIVE_OUTPUTS = OUTPUTS + ("subnet_name", "subnet_value")


def classify(logits: tf.Tensor) -> dict:
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64)}


def images_spec(channels: int, image_size: int | None = None) -> tf.TensorSpec:
    """uint8 images of any size (serving) or of a fixed size (TFLite)."""
    return tf.TensorSpec([None, image_size, image_size, channels], tf.uint8, name=IMAGES)


def subnet_function(model: keras.Model, prepare):
    """images -> probabilities and classes of one extracted subnet; `prepare` maps
    client images to network inputs (`DataSettings.prepare_batch`)."""

    def serve(images):
        return classify(model(prepare(images), training=False))

    return serve


def adaptive_name(metric: str) -> str:
    return f"{ADAPTIVE}_{metric}"


def adaptive_function(models: list[keras.Model], names: list[str], values: list[float], prepare):
    """(images, budget) -> the outputs of the largest subnet whose value <= budget.

    `models`, `names` and `values` are sorted by value, ascending.
    """
    if not models or not (len(models) == len(names) == len(values)):
        raise ValueError("adaptive: needs one name and one value per model")
    if list(values) != sorted(values):
        raise ValueError("adaptive: subnets must be sorted by value")
    values_t = tf.constant(values, tf.float32)
    names_t = tf.constant(names)

    def serve(images, budget):
        x = prepare(images)
        budget = tf.reduce_min(tf.reshape(tf.cast(budget, tf.float32), [-1]))
        fits = tf.reduce_sum(tf.cast(values_t <= budget, tf.int32))
        index = tf.maximum(fits - 1, 0)
        branches = [lambda model=model: classify(model(x, training=False)) for model in models]
        outputs = tf.switch_case(index, branches)
        count = tf.shape(outputs["classes"])[:1]
        outputs["subnet_name"] = tf.fill(count, tf.gather(names_t, index))
        outputs["subnet_value"] = tf.fill(count, tf.gather(values_t, index))
        return outputs

    return serve


def _weights(models) -> list[tf.Variable]:
    seen, weights = set(), []
    for model in models:
        for variable in model.variables:
            value = variable.value if isinstance(variable, keras.Variable) else variable
            if id(value) not in seen:
                seen.add(id(value))
                weights.append(value)
    return weights


def signatures(
    subnets,
    models: dict,
    data,
    metrics: list[str] | None = None,
    fixed_size: bool = False,
) -> tuple[dict, dict]:
    """Signature functions by name, and a description of each for the manifest.

    Args:
        subnets: `subnets.Subnet`s, sorted by the first metric.
        models: their calibrated Keras models, by name.
        data: the run's `DataSettings`: image size, channels and preprocessing.
        metrics: the run's metric names; the first one's largest subnet is
            `serving_default` and its adaptive signature is also `adaptive`.
            None writes the per-subnet signatures only.
        fixed_size: take `image_size` x `image_size` images (for TFLite).
    """
    spec = images_spec(data.info.channels, data.image_size if fixed_size else None)
    functions, described = {}, {}

    def add(name, fn, input_signature, entry):
        functions[name] = tf.function(fn, input_signature=input_signature, autograph=False)
        described[name] = entry

    def alias(name, of, entry):  # one traced function under a second signature name
        functions[name] = functions[of]
        described[name] = entry

    for subnet in subnets:
        fn = subnet_function(models[subnet.name], data.prepare_batch)
        add(subnet.name, fn, [spec], {"subnet": subnet.name, "inputs": [IMAGES], "outputs": list(OUTPUTS)})
    if not metrics:
        return functions, described
    default = subnets_lib.largest(subnets, metrics[0])
    alias(SERVING_DEFAULT, default.name, {"subnet": default.name, "inputs": [IMAGES], "outputs": list(OUTPUTS)})
    budget_spec = tf.TensorSpec(None, tf.float32, name=BUDGET)
    for metric in metrics:
        chosen = subnets_lib.candidates(subnets, metric)
        if not chosen:
            continue
        fn = adaptive_function(
            [models[s.name] for s in chosen], [s.name for s in chosen], [s.values[metric] for s in chosen],
            data.prepare_batch,
        )
        entry = {
            "metric": metric,
            "inputs": [IMAGES, BUDGET],
            "outputs": list(ADAPTIVE_OUTPUTS),
            "rule": "the most accurate subnet whose value fits the budget (the Pareto front)"
            if all(s.accuracy is not None for s in chosen)
            else "the largest subnet whose value fits the budget (accuracies unknown)",
            "choices": [{"subnet": s.name, "value": s.values[metric], "top1": s.accuracy} for s in chosen],
        }
        add(adaptive_name(metric), fn, [spec, budget_spec], entry)
        if ADAPTIVE not in functions:
            alias(ADAPTIVE, adaptive_name(metric), entry)
    return functions, described


def save(path: str, models, functions: dict) -> None:
    """Writes a SavedModel whose signatures are `functions` (name -> tf.function)."""
    module = tf.Module()
    module.weights = _weights(models)
    concrete = {name: fn.get_concrete_function() for name, fn in functions.items()}
    tf.saved_model.save(module, path, signatures=concrete)
