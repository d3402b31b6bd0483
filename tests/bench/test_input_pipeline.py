"""bench/input_pipeline.py: its folder, its torchvision lighting, its summary and a whole tiny run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from support import ROOT, load_script, subprocess_env

input_pipeline = load_script(os.path.join(ROOT, "bench", "input_pipeline.py"), "input_pipeline")


def test_ratios_are_pss_over_torchvision_per_pipeline():
    values = {
        "pss_train_224": [600.0, 500.0, 700.0], "torch_train_224": [300.0, 200.0, 250.0],
        "pss_eval_224": [900.0], "torch_eval_224": [300.0], "pss_train_128": [800.0],
    }
    summary = input_pipeline.summarise(values)
    assert summary["median_images_per_s"] == {
        "pss_train_224": 600.0, "torch_train_224": 250.0, "pss_eval_224": 900.0, "torch_eval_224": 300.0,
        "pss_train_128": 800.0,
    }
    assert summary["ratios"] == {"train_224_pss_over_torch": 2.4, "eval_224_pss_over_torch": 3.0}


def test_lighting_adds_one_shift_along_the_eigenvectors():
    Image = pytest.importorskip("PIL.Image")
    np.random.seed(3)
    alpha = np.random.normal(0.0, 0.1, 3).astype(np.float32)
    np.random.seed(3)
    image = Image.fromarray(np.full((4, 5, 3), 100, np.uint8))
    out = np.asarray(input_pipeline.Lighting(0.1)(image))
    basis = np.asarray(input_pipeline.PCA_EIGENVECTORS) * np.asarray(input_pipeline.PCA_EIGENVALUES)
    expected = np.round(100 + 255 * basis @ alpha)
    np.testing.assert_array_equal(out, np.broadcast_to(expected, (4, 5, 3)))
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 1 and not np.all(out == 100)


def _run_bench(script: str, out, *flags) -> dict:
    """Runs bench/`script` with `flags` and `--out=out`; the JSON it printed, which must equal the file."""
    command = [sys.executable, os.path.join(ROOT, "bench", script), *flags, f"--out={out}"]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    with open(out) as f:
        assert json.load(f) == printed
    return printed


def test_a_tiny_run_prints_its_figures_as_json(tmp_path):
    work = str(tmp_path / "folder")
    printed = _run_bench(
        "input_pipeline.py", tmp_path / "out.json", "--images=16", "--classes=2", "--batch=4", "--sizes=32",
        "--repeats=1", "--warmup=1", f"--work_dir={work}", "--skip_torch",
    )
    assert printed["benchmark"] == "input_pipeline" and printed["cpu"] and printed["tensorflow"]
    assert printed["torch"] is None and printed["ratios"] == {}
    assert printed["folder"]["train_images"] == 16 and 440 <= printed["folder"]["median_width"] <= 560
    assert set(printed["images_per_s"]) == {"pss_train_32", "pss_eval_224"}
    for case, runs in printed["runs"].items():
        assert len(runs) == 1 and runs[0]["images"] == 4 * 4 and runs[0]["images_per_s"] > 0
        assert printed["median_images_per_s"][case] == runs[0]["images_per_s"]
    written = sorted(os.listdir(os.path.join(work, "train", "class_1")))
    assert len(written) == 8 and all(name.endswith(".jpg") for name in written)


def test_the_stage_timings_of_a_tiny_folder_print_as_json(tmp_path):
    work = str(tmp_path / "folder")
    input_pipeline.write_folder(work, 6, 2)
    printed = _run_bench(
        "input_stages.py", tmp_path / "s.json", f"--work_dir={work}", "--images=5", "--size=32", "--passes=1",
        "--threads=1,2", "--stages=decode_whole,train,eval",
    )
    assert printed["benchmark"] == "input_stages" and printed["images"] == 5 and printed["lscpu_model_name"]
    assert list(printed["ms_per_image"]) == ["decode_whole", "train", "eval"]
    for timings in printed["ms_per_image"].values():
        assert set(timings) == {"1_threads", "2_threads"} and all(0 < ms < 10_000 for ms in timings.values())
    bad = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "input_stages.py"), f"--work_dir={work}", "--stages=nope"],
        capture_output=True, text=True, env=subprocess_env(),
    )
    assert bad.returncode != 0 and "--stages" in bad.stderr
