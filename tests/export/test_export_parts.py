"""The export's parts on their own: preprocessing, subnet choice, adaptive switching,
directory layout and versions, requests, and a one-channel subnet through TFLite.

No training run is needed here; tests/test_export.py exports a real one.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from pss_tf import SearchSpace, SubnetConfig, build_supernet
from pss_tf.data import preprocess_for_eval
from pss_tf.data.settings import DataSettings
from pss_tf.data.sources import SyntheticSpec
from pss_tf.errors import ConfigError
from pss_tf.export import client, savedmodel, serving, tflite
from pss_tf.export import subnets as subnets_lib
from pss_tf.export.options import ExportOptions
from pss_tf.space.cost import param_counts
from pss_tf.space.metrics import FlopsMetric
from pss_tf.space.targets import TargetGrid

# --- preprocessing -----------------------------------------------------------


def _data(crop_fraction=0.875, channels=3, image_size=28):
    """Settings of a synthetic dataset: what a run's serving graphs prepare images with."""
    return DataSettings("synthetic", None, image_size, SyntheticSpec(channels=channels), crop_fraction=crop_fraction)


@pytest.mark.parametrize("height, width", [(28, 28), (20, 36), (64, 48), (101, 100), (31, 29)])
@pytest.mark.parametrize("crop_fraction", [0.875, 1.0])
def test_batched_preprocessing_matches_the_evaluation_pipeline(height, width, crop_fraction):
    rng = np.random.default_rng(height * width)
    images = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    expected = np.stack([preprocess_for_eval(tf.constant(im), 28, crop_fraction).numpy() for im in images])
    data = _data(crop_fraction)
    static = data.prepare_batch(tf.constant(images)).numpy()
    dynamic_fn = tf.function(
        data.prepare_batch,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
    )
    dynamic = dynamic_fn(tf.constant(images)).numpy()
    assert static.shape == dynamic.shape == (3, 28, 28, 3)
    np.testing.assert_allclose(static, expected, atol=1e-6)
    np.testing.assert_allclose(dynamic, expected, atol=1e-6)


def test_preprocessing_refuses_the_wrong_channel_count():
    with pytest.raises(ValueError, match="channels"):
        _data(channels=1).prepare_batch(tf.zeros([1, 28, 28, 3], tf.uint8))


# --- choosing and naming subnets ------------------------------------------------


def _metrics(model="mobilenet_v1"):
    return {"flops": FlopsMetric(model, TargetGrid(1, 20, 1), num_classes=10, small_input=True, in_channels=1)}


COST = dict(num_classes=10, small_input=True, in_channels=1)


def _winner(name, width, resolution=28):
    config = SubnetConfig.uniform("mobilenet_v1", resolution, width)
    entry = {"metric": "flops", "target": 1.0, "name": name, "val_top1": 0.5, "val_top5": 0.9}
    return entry, config


def test_subnets_are_sorted_by_value_and_configs_get_readable_names():
    space = SearchSpace("mobilenet_v1", 20, 28, 4, 0.25, 0.5)
    config = subnets_lib.parse_config(json.dumps(SubnetConfig.uniform("mobilenet_v1", 24, 0.3).to_dict()), space)
    chosen = subnets_lib.select([_winner("flops_9m", 0.5), _winner("flops_3m", 0.25)], [config], _metrics(), COST)
    assert [s.source for s in chosen] == ["winner", "config", "winner"]
    assert chosen[1].name.startswith("subnet_24px_") and chosen[1].name.endswith("m")
    assert [s.values["flops"] for s in chosen] == sorted(s.values["flops"] for s in chosen)
    assert subnets_lib.largest(chosen, "flops").name == "flops_9m"
    assert [s.name for s in subnets_lib.candidates(chosen, "flops")] == [s.name for s in chosen]
    entry = chosen[0].to_dict()
    assert entry["macs_m"] > 0 and entry["channels"] and entry["config"]["resolution"] == 28
    assert entry["params"] == param_counts(SubnetConfig.from_dict(entry["config"]), **COST)
    assert 0 < entry["params"]["trainable"] < entry["params"]["all_weights"]


def test_configs_outside_the_search_space_are_refused_with_the_reason():
    space = SearchSpace("mobilenet_v1", 20, 28, 4, 0.25, 0.5)
    with pytest.raises(ValueError, match=r"outside the run's search space.*resolution: 64"):
        subnets_lib.parse_config(json.dumps(SubnetConfig.uniform("mobilenet_v1", 64, 0.3).to_dict()), space)
    with pytest.raises(ValueError, match=r"widths\[0\]: 0.75"):
        subnets_lib.parse_config(json.dumps(SubnetConfig.uniform("mobilenet_v1", 24, 0.75).to_dict()), space)
    with pytest.raises(ValueError, match="config: config: not valid JSON"):
        subnets_lib.parse_config("{not json", space)
    with pytest.raises(ValueError, match="model"):
        subnets_lib.parse_config(json.dumps(SubnetConfig.uniform("mobilenet_v2", 24, 0.3).to_dict()), space)


def test_the_same_config_twice_is_refused():
    config = SubnetConfig.uniform("mobilenet_v1", 24, 0.3)
    with pytest.raises(ValueError, match="share the signature name"):
        subnets_lib.select(None, [config, config], _metrics(), COST)
    with pytest.raises(ValueError, match="nothing to export"):
        subnets_lib.select([], [], _metrics(), COST)


@pytest.mark.parametrize(
    "field, value",
    [
        ("job_dir", ""),
        ("model_name", "no spaces"),
        ("tflite_kinds", ("float16",)),
        ("container_dir", "models"),
        ("latency_threads", 0),
        ("qat_subnet", "flops_3m"),
    ],
)
def test_bad_options_name_their_field(field, value):
    options = ExportOptions(job_dir="runs/a", export_dir="exports/a").replace(**{field: value})
    with pytest.raises(ConfigError) as raised:
        options.validate()
    assert raised.value.field == field


# --- adaptive switching --------------------------------------------------------


def _constant_model(num_classes, favourite, channels=1):
    """A model of standard layers whose prediction is always class `favourite`."""
    inputs = keras.Input((None, None, channels))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(num_classes)
    outputs = dense(x)
    dense.kernel.assign(np.zeros(dense.kernel.shape, "float32"))
    dense.bias.assign(np.eye(num_classes, dtype="float32")[favourite] * 5.0)
    return keras.Model(inputs, outputs)


def test_adaptive_signature_runs_the_largest_subnet_within_the_budget():
    values = [2.5, 5.0, 9.0]
    names = ["small", "medium", "large"]
    models = [_constant_model(4, i) for i in range(3)]
    fn = tf.function(savedmodel.adaptive_function(models, names, values, _data(channels=1).prepare_batch))
    images = tf.zeros([2, 30, 40, 1], tf.uint8)
    cases = [(1.0, 0), (2.5, 0), (4.9, 0), (5.0, 1), (8.0, 1), (9.0, 2), (1e9, 2), ([9.0, 5.0], 1), ([[6.0]], 1)]
    for budget, index in cases:
        out = fn(images, tf.constant(budget, tf.float32))
        assert out["classes"].numpy().tolist() == [index, index], budget
        assert [n.decode() for n in out["subnet_name"].numpy()] == [names[index]] * 2
        assert out["subnet_value"].numpy().tolist() == [values[index]] * 2
        assert out["probabilities"].shape == (2, 4)


def test_a_larger_budget_never_runs_a_less_accurate_winner():
    """The 2M winner is more accurate than the 3M, 4M and 5M ones (as seen in a real
    Fashion-MNIST run): a budget of 4.5 must run it, not the 4M one."""
    accuracies = {0.25: 0.8411, 0.3: 0.8391, 0.35: 0.8362, 0.4: 0.8388, 0.5: 0.8731}
    winners = []
    for width, top1 in accuracies.items():
        entry, config = _winner(f"w{int(width * 100)}", width)
        winners.append(({**entry, "val_top1": top1}, config))
    chosen = subnets_lib.select(winners, [], _metrics(), COST)
    front = subnets_lib.candidates(chosen, "flops")
    assert [s.name for s in front] == ["w25", "w50"]
    assert [s.accuracy for s in front] == [0.8411, 0.8731]
    models = {s.name: _constant_model(len(chosen), i) for i, s in enumerate(chosen)}
    data = _data(channels=1)
    functions, described = savedmodel.signatures(chosen, models, data, ["flops"])
    assert [c["subnet"] for c in described["adaptive"]["choices"]] == ["w25", "w50"]
    assert "most accurate" in described["adaptive"]["rule"]
    images = tf.zeros([1, 28, 28, 1], tf.uint8)
    values = {s.name: s.values["flops"] for s in chosen}
    for budget, expected in [(values["w35"] + 0.01, "w25"), (values["w40"], "w25"), (values["w50"], "w50"), (0.0, "w25")]:
        out = functions["adaptive"](images, tf.constant(budget, tf.float32))
        assert out["subnet_name"].numpy()[0].decode() == expected, budget
    # Without accuracies (a config exported unevaluated) the rule falls back to the largest that fits.
    unknown = [dataclasses.replace(s, val_top1=None) for s in chosen]
    assert [s.name for s in subnets_lib.candidates(unknown, "flops")] == [s.name for s in chosen]


def test_winners_are_marked_on_the_pareto_front():
    from pss_tf.pareto import mark_pareto_front

    entries = [
        {"metric": "flops", "value": v, "val_top1": a}
        for v, a in [(2.0, 0.84), (3.0, 0.839), (4.0, 0.836), (5.0, 0.838), (6.0, 0.85), (6.0, 0.851)]
    ] + [{"metric": "latency_cpu", "value": 1.0, "val_top1": 0.5}]
    mark_pareto_front(entries)
    assert [e["pareto"] for e in entries] == [True, False, False, False, False, True, True]


def test_adaptive_signature_needs_sorted_values():
    with pytest.raises(ValueError, match="sorted"):
        savedmodel.adaptive_function([_constant_model(2, 0)] * 2, ["a", "b"], [3.0, 1.0], _data().prepare_batch)


# --- export directory ------------------------------------------------------------


def test_fresh_export_needs_a_new_or_empty_directory(tmp_path):
    assert serving.plan_version(str(tmp_path / "new"), new_version=False) == 1
    (tmp_path / "empty").mkdir()
    assert serving.plan_version(str(tmp_path / "empty"), new_version=False) == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists.*`new_version`"):
        serving.plan_version(str(tmp_path / "full"), new_version=False)
    with pytest.raises(ValueError, match="not an export directory"):
        serving.plan_version(str(tmp_path / "full"), new_version=True)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _read(path):
    with open(path) as f:
        return f.read()


def _fake_version(root, model_name, version):
    _write(os.path.join(serving.serving_path(root, model_name, version), "saved_model.pb"), f"v{version}")
    _write(os.path.join(serving.tflite_path(root, version), "a_float32.tflite"), f"v{version}")


def test_versions_are_added_beside_old_ones_by_rename(tmp_path):
    out = str(tmp_path / "out")
    staging = serving.staging_dir(out, fresh=True)
    _fake_version(staging, "pss_a", 1)
    serving.commit(staging, out, "pss_a", 1, {"version": 1}, "/models", fresh=True)
    assert not os.path.exists(staging)
    assert serving.plan_version(out, new_version=True) == 2
    staging = serving.staging_dir(out, fresh=False)
    assert os.path.dirname(staging) == os.path.abspath(out)
    _fake_version(staging, "pss_b", 2)
    serving.commit(staging, out, "pss_b", 2, {"version": 2}, "/srv/export", fresh=False)
    assert _read(os.path.join(serving.serving_path(out, "pss_a", 1), "saved_model.pb")) == "v1"
    assert _read(os.path.join(serving.tflite_path(out, 1), "a_float32.tflite")) == "v1"
    assert os.path.exists(os.path.join(serving.serving_path(out, "pss_b", 2), "saved_model.pb"))
    assert sorted(os.listdir(out)) == ["manifest.json", "models.config", "serving", "tflite"]
    assert json.loads(_read(os.path.join(out, "manifest.json"))) == {"version": 2}
    assert serving.existing_versions(out) == [1, 2]
    assert serving.plan_version(out, new_version=True) == 3


def test_models_config_parses_as_a_model_server_config():
    model_server_config_pb2 = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    from google.protobuf import text_format

    text = serving.models_config_text(["pss_a", "pss_b"], "/models/")
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    entries = config.model_config_list.config
    assert [(c.name, c.base_path, c.model_platform) for c in entries] == [
        ("pss_a", "/models/serving/pss_a", "tensorflow"),
        ("pss_b", "/models/serving/pss_b", "tensorflow"),
    ]


# --- requests ------------------------------------------------------------------


def test_rest_body_is_the_row_format_and_grpc_request_carries_uint8_tensors():
    images = np.arange(2 * 3 * 4 * 1, dtype=np.uint8).reshape(2, 3, 4, 1)
    body = json.loads(json.dumps(client.rest_body("adaptive", images, budget=5)))
    assert body["signature_name"] == "adaptive"
    assert len(body["instances"]) == 2 and body["instances"][1]["budget"] == 5.0
    np.testing.assert_array_equal(np.array(body["instances"][1]["images"], np.uint8), images[1])
    pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    request = client.predict_request("pss_x", "flops_3m", images, budget=2.0, version=3)
    assert request.model_spec.name == "pss_x" and request.model_spec.version.value == 3
    assert request.inputs["images"].dtype == tf.uint8.as_datatype_enum
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["images"]), images)
    assert tf.make_ndarray(request.inputs["budget"]).tolist() == [2.0]
    with pytest.raises(ValueError, match="uint8"):
        client.rest_body("x", images.astype(np.float32))


# --- one-channel subnets (Fashion-MNIST) through TFLite ---------------------------


def test_grayscale_subnet_converts_to_every_tflite_kind(tmp_path):
    supernet = build_supernet("mobilenet_v1", num_classes=10, small_input=True, in_channels=1)
    config = SubnetConfig.uniform("mobilenet_v1", 24, 0.25)
    model = supernet.extract(config, name="tiny")
    subnet = subnets_lib.Subnet("tiny", config, "config", {"flops": 1.0}, 1.0, 1)
    data = _data(channels=1)
    _, described = savedmodel.signatures([subnet], {"tiny": model}, data, ["flops"])
    assert set(described) == {"tiny", "serving_default", "adaptive_flops", "adaptive"}
    fixed, _ = savedmodel.signatures([subnet], {"tiny": model}, data, fixed_size=True)
    savedmodel.save(str(tmp_path / "fixed"), [model], fixed)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    expected = fixed["tiny"](tf.constant(images))["probabilities"].numpy()
    for kind in tflite.KINDS:
        content = tflite.convert(str(tmp_path / "fixed"), ["tiny"], kind, images)
        runner = tflite.signature_runner(content)
        assert runner.get_input_details()["images"]["shape_signature"].tolist() == [-1, 28, 28, 1]
        out = tflite.predict(runner, images)
        assert out["probabilities"].shape == (6, 10) and out["classes"].dtype == np.int64
        if kind == "float32":
            np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)


# --- the tf_keras rebuild for quantization-aware training ----------------------------


def test_tf_keras_rebuild_computes_what_the_extracted_model_computes(monkeypatch):
    pytest.importorskip("tensorflow_model_optimization")
    pytest.importorskip("tf_keras")
    from pss_tf.export import qat

    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    qat.import_tfmot()
    assert "TF_USE_LEGACY_KERAS" not in os.environ  # the rest of the process keeps Keras 3
    supernet = build_supernet("mobilenet_v2", num_classes=5, small_input=True)
    config = SubnetConfig.uniform("mobilenet_v2", 24, 0.35)
    model = supernet.extract(config, resize=False)
    rebuilt = qat.rebuild(supernet, config, supernet.subnet_weights(config))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 24, 24, 3)).astype("float32")
    np.testing.assert_allclose(rebuilt(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-5)
    assert rebuilt.count_params() == model.count_params()
    assert any(type(layer).__name__ == "Add" for layer in rebuilt.layers)
