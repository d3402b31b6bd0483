"""tools/export.py on a real smoke run: the TF Serving layout, its signatures run the way
a server runs them (REST and gRPC requests included), the TFLite files under LiteRT,
quantization-aware fine-tuning, new versions, and bad input.

One short smoke training (two pools) and one full export are shared by the whole
module, and by both pytest-xdist workers. The training runs more steps than
configs/smoke.flags so that predictions are decisive enough for the int8-versus-float
agreement check to measure quantization, not ties.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from support import run_tool, shared_dir, subprocess_env, tree_digest

from pss_tf import SubnetConfig
from pss_tf.errors import ConfigError
from pss_tf.export import client, exporter, serving, tflite
from pss_tf.export.client_data import ClientData
from pss_tf.export.options import ExportOptions
from pss_tf.run.job import Job
from pss_tf.space.cost import param_counts

HAS_QAT = all(importlib.util.find_spec(m) for m in ("tensorflow_model_optimization", "tf_keras"))
MODEL_NAME = "pss_mobilenet_v1"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job_dir(smoke_job):
    return smoke_job


@pytest.fixture(scope="module")
def export(job_dir, tmp_path_factory):
    with shared_dir(tmp_path_factory, "export_smoke_out") as root:
        out, log, errors = root / "out", root / "stdout.txt", root / "stderr.txt"
        if not log.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            qat = ["--qat", "--qat_epochs=1", "--qat_steps_per_epoch=2"] if HAS_QAT else []
            env = subprocess_env()
            env.pop("TF_CPP_MIN_LOG_LEVEL")  # as a user runs it
            result = run_tool("export.py", f"--job_dir={job_dir}", f"--export_dir={out}", *qat, env=env)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            errors.write_text(result.stderr)
            log.write_text(result.stdout)
    manifest = _json(out, "manifest.json")
    return str(out), manifest, log.read_text()


@pytest.fixture(scope="module")
def val_images(job_dir):
    """A validation batch as a client has it: uint8 at the training image size."""
    return next(ClientData(Job(job_dir).data).batches("val", 64))


def _saved_model_dir(out, version=1):
    return serving.serving_path(out, MODEL_NAME, version)


def _read(*path):
    with open(os.path.join(*map(str, path)), "rb") as f:
        return f.read()


def _json(*path):
    return json.loads(_read(*path))


class SessionServer:
    """Runs SignatureDefs the way TF Serving does: a v1 Session over the MetaGraph,
    tensors fed and fetched by the names in the SignatureDef."""

    def __init__(self, path):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], path)
        self.signatures = {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}

    def predict(self, name, inputs):
        signature = self.signatures[name]
        assert set(inputs) == set(signature.inputs), (name, set(inputs))
        feed = {signature.inputs[k].name: v for k, v in inputs.items()}
        fetch = {k: t.name for k, t in signature.outputs.items()}
        return self.session.run(fetch, feed)

    def rest(self, body_text):
        """A REST :predict call in the row format: JSON in, JSON out."""
        body = json.loads(body_text)
        signature = self.signatures[body.get("signature_name", "serving_default")]
        instances = body["instances"]
        inputs = {
            key: np.array([i[key] for i in instances], tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
            for key, info in signature.inputs.items()
        }
        outputs = self.predict(body.get("signature_name", "serving_default"), inputs)
        for key, value in outputs.items():
            assert len(value) == len(instances), f"{key}: one row per instance is needed by the row format"

        def cell(v):
            return v.decode() if isinstance(v, bytes) else v.tolist()

        return json.dumps({"predictions": [{k: cell(v[i]) for k, v in outputs.items()} for i in range(len(instances))]})

    def grpc(self, request_bytes):
        """A gRPC Predict call: serialized PredictRequest in, serialized PredictResponse out."""
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest.FromString(request_bytes)
        signature = self.signatures[request.model_spec.signature_name or "serving_default"]
        for key, proto in request.inputs.items():
            assert proto.dtype == signature.inputs[key].dtype, key
        outputs = self.predict(request.model_spec.signature_name, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response.SerializeToString()


@pytest.fixture(scope="module")
def server(export):
    out, _, _ = export
    return SessionServer(_saved_model_dir(out))


# --- layout and manifest ---------------------------------------------------------


def test_export_writes_the_serving_layout_models_config_and_manifest(export, job_dir):
    out, manifest, stdout = export
    assert sorted(os.listdir(out)) == ["manifest.json", "models.config", "serving", "tflite"]
    assert os.listdir(os.path.join(out, "serving", MODEL_NAME)) == ["1"]
    assert os.path.isfile(os.path.join(_saved_model_dir(out), "saved_model.pb"))
    model_server_config_pb2 = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    from google.protobuf import text_format

    config = text_format.Parse(_read(out, "models.config").decode(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (MODEL_NAME, f"/models/serving/{MODEL_NAME}", "tensorflow")

    winners = _json(job_dir, "winners.json")
    assert [s["name"] for s in manifest["subnets"]] == [w["name"] for w in sorted(winners, key=lambda w: w["value"])]
    assert manifest["version"] == 1 and manifest["model_name"] == MODEL_NAME
    assert manifest["input"]["dtype"] == "uint8" and manifest["input"]["tflite_shape"] == [None, 32, 32, 3]
    by_name = {w["name"]: w for w in winners}
    for subnet in manifest["subnets"]:
        winner = by_name[subnet["name"]]
        assert subnet["config"] == winner["config"] and subnet["values"]["flops"] == pytest.approx(winner["value"])
        assert subnet["macs_m"] == pytest.approx(winner["value"])
        config = SubnetConfig.from_dict(subnet["config"])
        assert subnet["params"] == param_counts(config, num_classes=4, small_input=True)
        assert 0 < subnet["params"]["trainable"] < subnet["params"]["all_weights"]
        # Calibrated on the evaluator's batches, the extracted model reproduces the run's accuracy.
        assert subnet["accuracy"]["keras"] == pytest.approx(winner["val_top1"]) == pytest.approx(subnet["val_top1"])
        assert set(tflite.KINDS) <= set(subnet["tflite"])
        for kind, entry in subnet["tflite"].items():
            assert entry["file"] == f"tflite/1/{subnet['name']}_{kind}.tflite"
            assert len(_read(out, entry["file"])) == entry["bytes"]
            assert entry["latency_ms"]["median"] > 0
        sizes = {k: subnet["tflite"][k]["bytes"] for k in tflite.KINDS}
        assert sizes["int8"] < sizes["float32"] / 2.5 and sizes["dynamic_range"] < sizes["float32"] / 2.5
    assert set(manifest["tflite_bundles"]) == set(tflite.KINDS)
    assert manifest["latency"]["device"]["logical_cores"] >= 1
    assert manifest == _json(_saved_model_dir(out), "assets.extra", "pss_manifest.json")
    assert "| subnet | res | M MACs |" in stdout and "bundle int8" in stdout


def test_the_user_sees_progress_and_summary_not_tensorflows_native_log_lines(export):
    """Before, TensorFlow's C++ lines (loader.cc, flatbuffer_export.cc, cudart_stub.cc: 159 of the
    174 lines on stderr for this export) drowned the progress; --verbosity=0 brings them back."""
    out, manifest, stdout = export
    stderr = open(os.path.join(os.path.dirname(out), "stderr.txt")).read()
    native = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+\.(cc|h):\d+\]", re.M)
    assert not native.search(stderr), stderr[:3000]
    for banner in ("absl::InitializeLog", "XNNPACK delegate", "fully_quantize", "To enable the following instructions"):
        assert banner not in stderr
    assert re.search(r"^\[ *\d+\.\d s\] ", stdout, re.M) and f"{MODEL_NAME} version 1 in " in stdout


def test_saved_model_cli_lists_every_signature(export):
    out, manifest, _ = export
    result = subprocess.run(
        ["saved_model_cli", "show", "--dir", _saved_model_dir(out), "--all"],
        capture_output=True, text=True, timeout=300, env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = [s["name"] for s in manifest["subnets"]] + ["serving_default", "adaptive", "adaptive_flops"]
    assert set(manifest["saved_model"]["signatures"]) == set(names)
    for name in names:
        assert f"signature_def['{name}']" in result.stdout
    assert "inputs['budget']" in result.stdout and "DT_UINT8" in result.stdout


# --- serving -------------------------------------------------------------------------


def _best_that_fits(manifest, budget):
    """The adaptive signature's choice: the last Pareto-front choice within the budget."""
    choices = manifest["saved_model"]["signatures"]["adaptive"]["choices"]
    fitting = [c["subnet"] for c in choices if c["value"] <= budget]
    return fitting[-1] if fitting else choices[0]["subnet"]


def test_every_signature_runs_in_a_server_session_on_any_image_size(server, export):
    _, manifest, _ = export
    images = np.random.default_rng(0).integers(0, 256, (3, 45, 37, 3), dtype=np.uint8)
    largest = manifest["subnets"][-1]["name"]
    best = _best_that_fits(manifest, 1e9)
    results = {}
    for name in server.signatures:
        inputs = {"images": images}
        if "budget" in server.signatures[name].inputs:
            inputs["budget"] = np.array([1e9], np.float32)
        results[name] = server.predict(name, inputs)
        assert results[name]["probabilities"].shape == (3, 4)
        np.testing.assert_allclose(results[name]["probabilities"].sum(-1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(results[name]["classes"], results[name]["probabilities"].argmax(-1))
    np.testing.assert_allclose(results["serving_default"]["probabilities"], results[largest]["probabilities"])
    assert [n.decode() for n in results["adaptive"]["subnet_name"]] == [best] * 3


def test_rest_and_grpc_requests_work_unchanged(server, export, val_images):
    pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    from tensorflow_serving.apis import predict_pb2

    _, manifest, _ = export
    images = val_images[0][:4]
    smallest = manifest["subnets"][0]
    direct = server.predict(smallest["name"], {"images": images})

    rest = json.loads(server.rest(json.dumps(client.rest_body(smallest["name"], images))))
    assert [p["classes"] for p in rest["predictions"]] == direct["classes"].tolist()
    np.testing.assert_allclose([p["probabilities"] for p in rest["predictions"]], direct["probabilities"], rtol=1e-6)
    rest = json.loads(server.rest(json.dumps(client.rest_body("adaptive", images, budget=smallest["values"]["flops"]))))
    assert {p["subnet_name"] for p in rest["predictions"]} == {smallest["name"]}

    request = client.predict_request(MODEL_NAME, smallest["name"], images)
    response = predict_pb2.PredictResponse.FromString(server.grpc(request.SerializeToString()))
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["classes"]), direct["classes"])
    request = client.predict_request(MODEL_NAME, "adaptive", images, budget=1e9)
    response = predict_pb2.PredictResponse.FromString(server.grpc(request.SerializeToString()))
    assert set(tf.make_ndarray(response.outputs["subnet_name"]).tolist()) == {_best_that_fits(manifest, 1e9).encode()}


def test_adaptive_signature_runs_the_best_subnet_that_fits_the_budget(server, export, val_images):
    """The choices are the Pareto front of the run's validation top-1 against MACs,
    and a budget runs the most accurate subnet that fits it."""
    _, manifest, _ = export
    images = val_images[0][:2]
    subnets = {s["name"]: s for s in manifest["subnets"]}
    choices = manifest["saved_model"]["signatures"]["adaptive"]["choices"]
    front = [c["subnet"] for c in choices]
    assert front == [s["name"] for s in manifest["subnets"] if s["pareto_front"]["flops"]]
    assert [subnets[n]["val_top1"] for n in front] == sorted({subnets[n]["val_top1"] for n in front})
    values = [s["values"]["flops"] for s in manifest["subnets"]]
    budgets = [values[0] / 2, values[-1] * 10] + values + [(a + b) / 2 for a, b in zip(values, values[1:])]
    for budget in budgets:
        name = _best_that_fits(manifest, budget)
        fitting = [s for s in manifest["subnets"] if s["values"]["flops"] <= budget]
        if fitting:  # Nothing that fits is more accurate than the one chosen.
            assert subnets[name]["val_top1"] == max(s["val_top1"] for s in fitting)
        out = server.predict("adaptive_flops", {"images": images, "budget": np.array(budget, np.float32)})
        assert [n.decode() for n in out["subnet_name"]] == [name] * 2, budget
        np.testing.assert_allclose(out["subnet_value"], np.float32(subnets[name]["values"]["flops"]))
        alone = server.predict(name, {"images": images})
        np.testing.assert_allclose(out["probabilities"], alone["probabilities"], atol=1e-6)


# --- TFLite --------------------------------------------------------------------------


def test_float_tflite_matches_the_saved_model(export, val_images):
    out, manifest, _ = export
    loaded = tf.saved_model.load(_saved_model_dir(out))
    images = val_images[0]
    for subnet in manifest["subnets"]:
        expected = loaded.signatures[subnet["name"]](images=tf.constant(images))
        content = _read(out, subnet["tflite"]["float32"]["file"])
        got = tflite.predict(tflite.signature_runner(content, subnet["name"]), images)
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"].numpy(), atol=1e-4)
        np.testing.assert_array_equal(got["classes"], expected["classes"].numpy())


def test_int8_and_dynamic_range_agree_with_float_on_a_validation_batch(export, val_images):
    out, manifest, _ = export
    images = val_images[0]
    for subnet in manifest["subnets"]:
        classes = {}
        for kind in tflite.KINDS:
            content = _read(out, subnet["tflite"][kind]["file"])
            classes[kind] = tflite.predict(tflite.signature_runner(content), images)["classes"]
        for kind in ("dynamic_range", "int8"):
            agreement = np.mean(classes[kind] == classes["float32"])
            assert agreement >= 0.98, (subnet["name"], kind, agreement)
    interpreter = tflite._interpreter_class()(model_content=_read(out, manifest["subnets"][0]["tflite"]["int8"]["file"]))
    dtypes = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in dtypes and interpreter.get_signature_runner().get_input_details()["images"]["dtype"] == np.uint8


def test_bundle_switches_subnets_through_signature_runners(export, val_images):
    out, manifest, _ = export
    images = val_images[0][:8]
    bundle = manifest["tflite_bundles"]["float32"]
    content = _read(out, bundle["file"])
    names = [s["name"] for s in manifest["subnets"]]
    assert bundle["signatures"] == names
    assert sorted(tflite._interpreter_class()(model_content=content).get_signature_list()) == sorted(names)
    for subnet in manifest["subnets"]:
        from_bundle = tflite.predict(tflite.signature_runner(content, subnet["name"]), images)
        alone = tflite.predict(tflite.signature_runner(_read(out, subnet["tflite"]["float32"]["file"])), images)
        np.testing.assert_allclose(from_bundle["probabilities"], alone["probabilities"], atol=1e-6)
    int8_bundle = _read(out, manifest["tflite_bundles"]["int8"]["file"])
    for name in names:
        assert tflite.predict(tflite.signature_runner(int8_bundle, name), images)["classes"].shape == (8,)


@pytest.mark.skipif(not HAS_QAT, reason="needs tensorflow-model-optimization and tf_keras")
def test_quantization_aware_fine_tuning_reports_int8_accuracy_with_and_without(export, val_images):
    out, manifest, stdout = export
    report = manifest["qat"]
    largest = manifest["subnets"][-1]
    assert report["subnet"] == largest["name"] and report["epochs"] == 1 and report["steps_per_epoch"] == 2
    assert 0.0 <= report["int8_top1_with_qat"] <= 1.0 and 0.0 <= report["int8_top1_without_qat"] <= 1.0
    assert report["int8_top1_without_qat"] == largest["accuracy"]["tflite_int8"]
    content = _read(out, report["file"])
    assert largest["tflite"]["int8_qat"]["bytes"] == len(content)
    assert tflite.predict(tflite.signature_runner(content), val_images[0][:4])["probabilities"].shape == (4, 4)
    assert "QAT " in stdout


# --- new versions, chosen configs, bad input ----------------------------------------------


def test_new_version_adds_a_chosen_config_beside_the_old_version(export, job_dir, tmp_path):
    out, manifest, _ = export
    copy = str(tmp_path / "out")
    shutil.copytree(out, copy)
    before = tree_digest(copy)
    config = dict(manifest["subnets"][0]["config"], resolution=28)
    options = ExportOptions(job_dir=job_dir, export_dir=copy).replace(
        new_version=True, config=(json.dumps(config),), tflite_kinds=("float32",), bundle=False, evaluate=False,
        latency=False,
    )
    result = exporter.export(options, log=lambda message: None)
    assert result.version == 2
    after = tree_digest(copy)
    assert {k: v for k, v in after.items() if k in before and k not in ("manifest.json", "models.config")} == {
        k: v for k, v in before.items() if k not in ("manifest.json", "models.config")
    }
    assert sorted(os.listdir(os.path.join(copy, "serving", MODEL_NAME))) == ["1", "2"]
    assert not [n for n in os.listdir(copy) if n.startswith(".")]
    (subnet,) = result.manifest["subnets"]
    assert subnet["source"] == "config" and subnet["config"] == config and subnet["name"].startswith("subnet_28px_")
    assert os.listdir(os.path.join(copy, "tflite", "2")) == [f"{subnet['name']}_float32.tflite"]
    assert _json(copy, "manifest.json")["version"] == 2
    loaded = tf.saved_model.load(_saved_model_dir(copy, 2))
    assert set(loaded.signatures) == {subnet["name"], "serving_default", "adaptive", "adaptive_flops"}


def test_an_existing_export_directory_is_refused_and_left_alone(export, job_dir):
    out, _, _ = export
    before = tree_digest(out)
    result = run_tool("export.py", f"--job_dir={job_dir}", f"--export_dir={out}", timeout=300)
    assert result.returncode == 2
    assert "already exists" in result.stderr and "--new_version" in result.stderr
    assert tree_digest(out) == before


def test_bad_input_fails_before_any_work_and_writes_nothing(job_dir, tmp_path):
    out = str(tmp_path / "out")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(os.path.join(job_dir, "run.json"), unfinished / "run.json")
    cases = [
        (dict(job_dir=str(unfinished)), "has no winners.json"),
        (dict(job_dir=str(tmp_path / "nothing")), "holds no training run"),
        (dict(job_dir=job_dir, config=('{"model": "mobilenet_v1", "resolution": 64, "widths": [0.4]}',)), "14 width"),
        (
            dict(job_dir=job_dir, config=(json.dumps({"model": "mobilenet_v1", "resolution": 64, "widths": [0.4] * 14}),)),
            "outside the run's search space",
        ),
        (dict(job_dir=job_dir, qat=True, qat_subnet="flops_999m"), "qat_subnet: "),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            exporter.export(ExportOptions(export_dir=out).replace(**kwargs), log=lambda m: None)
        assert not os.path.exists(out)
        assert sorted(os.listdir(tmp_path)) == ["unfinished"]


def test_an_export_reads_the_data_from_its_own_data_dir_when_the_data_moved(tmp_path):
    """The run's data moved after training: the export's data_dir is the one every
    pipeline reads (calibration included); without it the export stops before any work."""
    from support import make_fashion_dir, smoke_config

    from pss_tf.training import runtime

    data_dir, moved = tmp_path / "data", tmp_path / "moved"
    data_dir.mkdir()
    make_fashion_dir(data_dir, num_train=64, num_val=16)
    job = tmp_path / "job"
    config = smoke_config(
        job, dataset="fashion_mnist", data_dir=str(data_dir), epochs=1, steps_per_epoch=2, eval_winners_per_epoch=0,
        final_top_k=1, flops_targets=(4, 12, 8),
    )
    runtime.configure(config)
    assert runtime.run(config).finished
    shutil.move(str(data_dir), str(moved))
    out = tmp_path / "out"
    quick = dict(tflite_kinds=(), bundle=False, evaluate=False, latency=False)
    with pytest.raises(ConfigError) as raised:
        exporter.export(ExportOptions(job_dir=str(job), export_dir=str(out)).replace(**quick), log=lambda m: None)
    assert raised.value.field == "data_dir" and str(data_dir) in str(raised.value)
    assert not out.exists()
    options = ExportOptions(job_dir=str(job), export_dir=str(out), data_dir=str(moved)).replace(**quick)
    plan = exporter.plan(options)
    assert plan.job.data.data_dir == str(moved)
    result = exporter.export(options, log=lambda m: None)
    assert result.version == 1 and result.manifest["subnets"]
