"""MobileNetV3-Small end to end: the smoke run (configs/smoke.flags with
--model=mobilenet_v3_small, nothing else changed) trains and exports; its float
TFLite files run hard-swish as one HARD_SWISH op under LiteRT and compute what the
SavedModel computes; the dynamic-range and int8 files run too (slow tier); and
quantization-aware fine-tuning, which tf_keras cannot express for its layers, is
refused by name before any work.
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from support import run_tool, shared_dir

from pss_tf.errors import ConfigError
from pss_tf.export import exporter, serving, tflite
from pss_tf.export.client_data import ClientData
from pss_tf.export.options import ExportOptions
from pss_tf.export.qat import unsupported
from pss_tf.run.job import Job
from pss_tf.space.targets import TargetGrid

MODEL = "mobilenet_v3_small"


def _manifest(out) -> dict:
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def _ops(content: bytes) -> set:
    interpreter = tflite._interpreter_class()(model_content=content)
    return {op["op_name"] for op in interpreter._get_ops_details()}


def _check_tflite_files(out, job_dir, kinds):
    """Every subnet's files of `kinds` run HARD_SWISH; the float one equals the SavedModel's signature."""
    manifest = _manifest(out)
    assert manifest["subnets"] and manifest["model"] == MODEL
    loaded = tf.saved_model.load(serving.serving_path(out, f"pss_{MODEL}", 1))
    images = next(ClientData(Job(job_dir).data).batches("val", 64))[0]
    for subnet in manifest["subnets"]:
        expected = loaded.signatures[subnet["name"]](images=tf.constant(images))
        assert sorted(subnet["tflite"]) == sorted(kinds)
        for kind in kinds:
            with open(os.path.join(out, subnet["tflite"][kind]["file"]), "rb") as f:
                content = f.read()
            assert "HARD_SWISH" in _ops(content), kind
            got = tflite.predict(tflite.signature_runner(content, subnet["name"]), images)
            if kind == "float32":
                np.testing.assert_allclose(got["probabilities"], expected["probabilities"].numpy(), atol=1e-4)
                np.testing.assert_array_equal(got["classes"], expected["classes"].numpy())
            else:
                assert got["probabilities"].shape == expected["probabilities"].shape


def test_the_smoke_run_spans_its_own_space_and_its_float_tflite_files_equal_the_saved_model(
    mobilenet_v3_smoke_job, mobilenet_v3_smoke_export
):
    job = Job(mobilenet_v3_smoke_job)
    assert job.run_config.targets.grid("flops") == (5.0,)
    # About five round targets over the space's 0.85..1.91M MACs.
    assert job.metrics["flops"].grid == TargetGrid(0.75, 2.0, 0.25)
    with open(os.path.join(os.path.dirname(mobilenet_v3_smoke_job), "train.log")) as f:
        assert "flops targets: 0.75 to 2 M MACs every 0.25 (6 targets, chosen from the space)" in f.read()
    winners = [entry["target"] for entry, _ in job.winners()]
    assert winners and set(winners) <= set(TargetGrid(0.75, 2.0, 0.25).targets)
    _check_tflite_files(mobilenet_v3_smoke_export, mobilenet_v3_smoke_job, ["float32"])


@pytest.mark.slow
def test_every_tflite_kind_runs_hard_swish_as_one_op(mobilenet_v3_smoke_job, tmp_path_factory):
    with shared_dir(tmp_path_factory, "mobilenet_v3_smoke_export") as root:
        out = root / "out"
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            result = run_tool("export.py", f"--job_dir={mobilenet_v3_smoke_job}", f"--export_dir={out}")
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            (root / "done").write_text("")
    _check_tflite_files(str(out), mobilenet_v3_smoke_job, list(tflite.KINDS))


def test_quantization_aware_training_is_refused_by_name(mobilenet_v3_smoke_job, tmp_path):
    assert unsupported(MODEL) == ["hard-swish", "squeeze-and-excite"] and unsupported("mobilenet_v1") == []
    options = ExportOptions(job_dir=mobilenet_v3_smoke_job, export_dir=str(tmp_path / "out")).replace(qat=True)
    with pytest.raises(ConfigError, match="qat.*hard-swish and squeeze-and-excite"):
        exporter.plan(options)
    assert not (tmp_path / "out").exists()
