"""bench/winner_latency.py on the MobileNetV3-Small smoke export: one row per exported
subnet with the manifest's figures, latencies from the runs it made, the targets two
exports share side by side, and bad input refused before any timing."""

import json
import os
import shutil
import subprocess
import sys

from support import ROOT, subprocess_env

from pss_tf.latency.measure import device_info

SCRIPT = os.path.join(ROOT, "bench", "winner_latency.py")
QUICK = ("--warmup_s=0.01", "--repeats=3", "--passes=2", "--threads=1")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                          env=subprocess_env(), timeout=600)


def copy_export(source, destination):
    """The manifest and .tflite files of an export (what the bench reads)."""
    with open(os.path.join(source, "manifest.json")) as f:
        manifest = json.load(f)
    os.makedirs(destination)
    shutil.copy(os.path.join(source, "manifest.json"), destination)
    for subnet in manifest["subnets"]:
        for entry in subnet["tflite"].values():
            os.makedirs(os.path.join(destination, os.path.dirname(entry["file"])), exist_ok=True)
            shutil.copy(os.path.join(source, entry["file"]), os.path.join(destination, entry["file"]))
    return manifest


def test_every_exported_subnet_is_timed_beside_its_manifest_figures(mobilenet_v3_smoke_export, tmp_path):
    other = str(tmp_path / "again")
    manifest = copy_export(mobilenet_v3_smoke_export, other)
    result = run(f"--export_dirs={mobilenet_v3_smoke_export},{other}", *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["cpu"] == device_info()["cpu"] and (report["kind"], report["threads"], report["batch"]) == (
        "float32", 1, 1)
    assert [e["subnets"] for e in report["exports"]] == [len(manifest["subnets"])] * 2
    assert report["exports"][0]["model"] == "mobilenet_v3_small"
    rows = report["winners"]
    assert [r["macs_m"] for r in rows] == sorted(r["macs_m"] for r in rows)
    by_key = {(r["export"], r["name"]): r for r in rows}
    assert len(by_key) == 2 * len(manifest["subnets"])
    for subnet in manifest["subnets"]:
        for export in (mobilenet_v3_smoke_export, other):
            row = by_key[(export, subnet["name"])]
            assert (row["macs_m"], row["params"], row["val_top1"], row["resolution"], row["target"]) == (
                subnet["macs_m"], subnet["params"]["trainable"], subnet["val_top1"], subnet["resolution"],
                subnet["target"])
            assert row["file"] == subnet["tflite"]["float32"]["file"] and row["tflite_float32_top1"] is None
            latency = row["latency_ms"]
            assert latency["runs"] == 2 * 3  # passes x repeats
            assert 0 < latency["q1"] <= latency["median"] <= latency["q3"]
            assert abs(latency["iqr"] - (latency["q3"] - latency["q1"])) <= 1.5e-4  # Each rounded to 4 decimals.
    # Both exports won every target: each appears once, its two winners side by side.
    assert [t["name"] for t in report["equal_targets"]] == [s["name"] for s in manifest["subnets"]]
    for target in report["equal_targets"]:
        assert [w["export"] for w in target["winners"]] in (
            [mobilenet_v3_smoke_export, other], [other, mobilenet_v3_smoke_export])
        assert len({w["macs_m"] for w in target["winners"]}) == 1


def test_bad_input_is_refused_before_any_timing(mobilenet_v3_smoke_export, tmp_path):
    result = run(f"--export_dirs={tmp_path}")
    assert result.returncode == 1 and f"--export_dirs: {tmp_path} holds no manifest.json" in result.stderr
    result = run(f"--export_dirs={mobilenet_v3_smoke_export},{mobilenet_v3_smoke_export}")
    assert result.returncode == 1 and "--export_dirs: a directory is given twice" in result.stderr
    result = run(f"--export_dirs={mobilenet_v3_smoke_export}", "--kind=int8")
    assert result.returncode == 1 and "--kind: " in result.stderr and "--tflite_kinds=int8" in result.stderr
    copy = tmp_path / "copy"
    manifest = copy_export(mobilenet_v3_smoke_export, str(copy))
    os.remove(copy / manifest["subnets"][0]["tflite"]["float32"]["file"])
    result = run(f"--export_dirs={copy}")
    assert result.returncode == 1 and "is missing" in result.stderr
    result = run(f"--export_dirs={mobilenet_v3_smoke_export}", "--repeats=0")
    assert result.returncode == 2 and "--repeats: must be at least 1, got 0" in result.stderr
    assert "pass 1" not in result.stderr
