"""MobileNetV3-Small end to end: the smoke run (configs/smoke.flags with
--model=mobilenet_v3_small) trains and exports; its TFLite files run under LiteRT
with hard-swish as one HARD_SWISH op, the float file equal to the SavedModel; and
quantization-aware fine-tuning, which tf_keras cannot express for its layers, is
refused by name before any work.

The smoke file's FLOPs grid (4..12M MACs) lies above every MobileNetV3-Small subnet
of its space (0.85..1.9M), so the run gives its own grid.
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from support import SMOKE_FLAGS, run_tool, shared_dir

from pss_tf.errors import ConfigError
from pss_tf.export import exporter, serving, tflite
from pss_tf.export.client_data import ClientData
from pss_tf.export.options import ExportOptions
from pss_tf.export.qat import unsupported
from pss_tf.run.job import Job

pytestmark = pytest.mark.slow
MODEL = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    with shared_dir(tmp_path_factory, "mobilenet_v3_smoke_job") as path:
        if not (path / "done").exists():
            shutil.rmtree(path, ignore_errors=True)
            result = run_tool(
                "train.py", f"--flagfile={SMOKE_FLAGS}", f"--model={MODEL}", "--flops_targets=0.8,2,0.25",
                f"--job_dir={path / 'job'}", "--noprogress",
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            (path / "done").write_text("")
    return str(path / "job")


@pytest.fixture(scope="module")
def export(job_dir, tmp_path_factory):
    with shared_dir(tmp_path_factory, "mobilenet_v3_smoke_export") as root:
        out = root / "out"
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            result = run_tool("export.py", f"--job_dir={job_dir}", f"--export_dir={out}")
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            (root / "done").write_text("")
    with open(out / "manifest.json") as f:
        return str(out), json.load(f)


def _ops(content: bytes) -> set:
    interpreter = tflite._interpreter_class()(model_content=content)
    return {op["op_name"] for op in interpreter._get_ops_details()}


def test_tflite_files_run_hard_swish_as_one_op_and_float_equals_the_saved_model(export, job_dir):
    out, manifest = export
    assert manifest["subnets"]
    loaded = tf.saved_model.load(serving.serving_path(out, f"pss_{MODEL}", 1))
    images = next(ClientData(Job(job_dir).data).batches("val", 64))[0]
    for subnet in manifest["subnets"]:
        expected = loaded.signatures[subnet["name"]](images=tf.constant(images))
        for kind in tflite.KINDS:
            with open(os.path.join(out, subnet["tflite"][kind]["file"]), "rb") as f:
                content = f.read()
            assert "HARD_SWISH" in _ops(content), kind
            got = tflite.predict(tflite.signature_runner(content, subnet["name"]), images)
            if kind == "float32":
                np.testing.assert_allclose(got["probabilities"], expected["probabilities"].numpy(), atol=1e-4)
                np.testing.assert_array_equal(got["classes"], expected["classes"].numpy())
            else:
                assert got["probabilities"].shape == expected["probabilities"].shape


def test_quantization_aware_training_is_refused_by_name(job_dir, tmp_path):
    assert unsupported(MODEL) == ["hard-swish", "squeeze-and-excite"] and unsupported("mobilenet_v1") == []
    options = ExportOptions(job_dir=job_dir, export_dir=str(tmp_path / "out")).replace(qat=True)
    with pytest.raises(ConfigError, match="qat.*hard-swish and squeeze-and-excite"):
        exporter.plan(options)
    assert not (tmp_path / "out").exists()
