"""bench/batch_norm_kernels.py: a tiny run's JSON and its refusal of unknown formulations."""

import json
import os
import subprocess
import sys

import pytest
from support import ROOT, subprocess_env

SCRIPT = os.path.join(ROOT, "bench", "batch_norm_kernels.py")


def _run(*flags):
    return subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True, env=subprocess_env(),
                          timeout=600)


def test_a_tiny_run_times_each_formulation_and_checks_it_against_float64(tmp_path):
    out = tmp_path / "bn.json"
    done = _run("--batch=1", "--resolution=32", "--warmup=0", "--repeats=1", "--formulations=fused,fused_flat,moments",
                f"--out={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    assert json.loads(out.read_text()) == printed
    layers = printed["layers"]
    assert len(layers) == 27 and layers[0]["shape"] == [1, 16, 16, 32] and layers[-1]["shape"] == [1, 1, 1, 1024]
    for name in ("fused", "fused_flat", "moments"):
        assert printed["total_s"][name] == pytest.approx(sum(layer["seconds"][name] for layer in layers), abs=1e-4)
    assert printed["total_over_fused"]["fused"] == 1.0
    assert set(printed["max_abs_diff"]["fused"]["vs_fused"].values()) == {0.0}
    reference = printed["reference_max_abs"]
    for name in ("fused", "fused_flat", "moments"):  # float32 rounding apart from float64
        for output, difference in printed["max_abs_diff"][name]["vs_float64"].items():
            assert 0 < difference <= 1e-4 * reference[output], (name, output)


def test_unknown_formulations_are_refused_naming_the_flag():
    done = _run("--formulations=fused,fastest")
    assert done.returncode == 2 and "--formulations" in done.stderr
