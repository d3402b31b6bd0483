"""bench/kernels.py (kernel settings, emulated AVX2) and bench/elementwise_kernels.py (layer shapes, a tiny run)."""

import json
import os
import subprocess
import sys

import pytest
from support import ROOT, load_script

sys.path.insert(0, os.path.join(ROOT, "bench"))  # the scripts import their siblings by name
kernels = load_script(os.path.join(ROOT, "bench", "kernels.py"), "kernels")
elementwise = load_script(os.path.join(ROOT, "bench", "elementwise_kernels.py"), "elementwise_kernels")


def _cpu_flags() -> set:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_unknown_settings_are_refused_naming_the_flag():
    assert kernels.parse("native, eigen_avx2") == ["native", "eigen_avx2"]
    with pytest.raises(SystemExit, match="--kernels: unknown setting.*avx3"):
        kernels.parse("native,avx3")
    with pytest.raises(SystemExit, match="--kernels"):
        kernels.parse(",")


def test_a_child_gets_its_settings_variables_and_none_of_the_parents(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.setenv("OTHER_VARIABLE", "kept")
    native = kernels.environment("native")
    assert native["TF_ENABLE_ONEDNN_OPTS"] == "1" and "ONEDNN_MAX_CPU_ISA" not in native
    assert native["OTHER_VARIABLE"] == "kept" and native["PSS_BENCH_KERNELS"] == "native"
    eigen = kernels.environment("eigen_avx2")
    assert (eigen["TF_ENABLE_ONEDNN_OPTS"], eigen["ONEDNN_MAX_CPU_ISA"]) == ("0", "AVX2")
    torch_side = kernels.environment("onednn_avx2", "torch")
    assert torch_side["ATEN_CPU_CAPABILITY"] == "avx2" and torch_side["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert "TF_ENABLE_ONEDNN_OPTS" not in torch_side


def test_flags_are_dropped_in_both_spellings():
    argv = ["--kernels=a,b", "--rounds", "2", "--skip_keras3", "--release_dir", "/x", "--batch=8"]
    assert kernels.without_flags(argv, "--kernels", "--rounds", "--release_dir") == ["--skip_keras3", "--batch=8"]


@pytest.mark.skipif("avx2" not in _cpu_flags(), reason="needs an x86 CPU with AVX2")
def test_the_emulated_avx2_settings_take_effect():
    eigen = kernels.probe("eigen_avx2")
    assert eigen["onednn_enabled"] is False
    assert eigen["onednn_isa"] == "Intel AVX2"  # TensorFlow's Eigen contractions call oneDNN's sgemm
    assert eigen["onednn_gemm_calls"] > 0 and eigen["onednn_convolution"] == []
    onednn = kernels.probe("onednn_avx2")
    assert onednn["onednn_enabled"] is True and onednn["onednn_isa"] == "Intel AVX2"
    assert onednn["onednn_convolution"] and all(k.endswith(":avx2") for k in onednn["onednn_convolution"])


def test_layer_shapes_are_mobilenet_v1s():
    sizes_and_channels = [(112, 32), (112, 32), (112, 64), (56, 64), (56, 128), (56, 128), (56, 128), (28, 128),
                          (28, 256), (28, 256), (28, 256), (14, 256), (14, 512)]
    sizes_and_channels += [(14, 512)] * 10 + [(7, 512), (7, 1024), (7, 1024), (7, 1024)]
    assert elementwise.layer_shapes("mobilenet_v1", 224, 1.0, 32) == [(32, s, s, c) for s, c in sizes_and_channels]
    smallest = elementwise.layer_shapes("mobilenet_v1", 128, 0.75, 2)
    assert len(smallest) == 27
    assert smallest[0] == (2, 64, 64, 24) and smallest[-1] == (2, 4, 4, 768)


def test_a_tiny_run_prints_per_value_times():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "elementwise_kernels.py"), "--batch=1", "--warmup=0",
         "--repeats=1", "--subnets=min"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    result = json.loads(out.stdout)
    totals = result["subnets"]["min"]["totals"]
    assert totals["layers"] == 27
    assert totals["values"] == sum(layer["values"] for layer in result["subnets"]["min"]["layers"])
    assert totals["bn_ns_per_value"] == pytest.approx(1e9 * totals["bn_s"] / totals["values"], rel=1e-3, abs=1e-4)
    assert result["kernels"]["onednn_enabled"] in (True, False)
