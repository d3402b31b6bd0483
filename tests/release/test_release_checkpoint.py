"""Reading the PSS-Net release's files: exact logits, safe unpickling, bad input.

The fixtures (tests/fixtures/release) were written by the release's own code
(make_fixtures.py there): two random-weight checkpoints in train.py's layout,
the release's eval-mode logits of six subnets per model, and synthetic latency
tables in the release's format. No torch is needed here.
"""

import collections
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from release_support import FIXTURES, release_file, rewrite_records, write_torch_zip
from support import run_tool

from pss_tf import safe_pickle
from pss_tf.errors import ConfigError
from pss_tf.latency.release_luts import ReleaseLatencyMetric, read_release_lut
from pss_tf.release.checkpoint import load_into_supernet, read_checkpoint
from pss_tf.space.config import SubnetConfig

# |ours - release| <= RTOL * max |release logit|, per subnet, float32 (measured: 5.6e-6 for V1, 3.3e-6 for V2).
RTOL = 1e-4


def fixture_images(spec) -> np.ndarray:
    """The images the release saw (NCHW, regenerated from the seed) in NHWC."""
    rng = np.random.default_rng(spec["seed"])
    images = (rng.random((spec["count"], 3, spec["size"], spec["size"]), dtype=np.float32) * 4 - 2).astype(np.float32)
    assert images.astype(np.float64).sum() == spec["checksum"]
    return images.transpose(0, 2, 3, 1)


def release_logits(short: str):
    with open(os.path.join(FIXTURES, f"{short}_logits.json")) as f:
        return json.load(f)


def subnet_config(model: str, release_cfg: dict) -> SubnetConfig:
    stages = 14 if model == "mobilenet_v1" else 8  # MobileNetV2's ninth multiplier is read by no layer
    return SubnetConfig(model, release_cfg["resolution"], tuple(release_cfg["stage_cout_mults"][:stages]))


def largest_relative_difference(supernet, fixture) -> float:
    images = fixture_images(fixture["images"])
    worst = 0.0
    for subnet in fixture["subnets"]:
        reference = np.asarray(subnet["logits"], np.float64)
        logits = supernet(images, subnet_config(supernet.model_name, subnet["config"]), training=False).numpy()
        worst = max(worst, float(np.abs(logits - reference).max() / np.abs(reference).max()))
    return worst


# --- exactness ------------------------------------------------------------------------


@pytest.mark.parametrize("short, model", [("mbv1", "mobilenet_v1"), ("mbv2", "mobilenet_v2")])
def test_logits_equal_the_release_forward(tmp_path, short, model):
    from pss_tf.models.supernet import build_supernet

    checkpoint = read_checkpoint(release_file(tmp_path, short))
    assert (checkpoint.model, checkpoint.num_classes, checkpoint.epoch) == (model, 10, 249)
    fixture = release_logits(short)
    resolutions = {s["config"]["resolution"] for s in fixture["subnets"]}
    assert {224, 128, 200, 136} <= resolutions  # even and odd feature sizes (200 -> 25 -> 13, 136 -> 17 -> 9)
    supernet = build_supernet(model, num_classes=10, padding="symmetric")
    load_into_supernet(supernet, checkpoint)
    assert largest_relative_difference(supernet, fixture) <= RTOL
    # TensorFlow's "same" padding shifts what the strided convs see: far off.
    shifted = build_supernet(model, num_classes=10, padding="same")
    load_into_supernet(shifted, checkpoint)
    assert largest_relative_difference(shifted, fixture) > 0.05


def test_pools_are_read_with_scores_and_release_values(tmp_path):
    checkpoint = read_checkpoint(release_file(tmp_path, "mbv1"))
    assert list(checkpoint.pools) == ["flops", "latency_cpu"]
    assert checkpoint.metrics == ["flops", "release_latency_cpu"]
    assert checkpoint.pool_capacity == 50
    members = [m for pool in checkpoint.pools["latency_cpu"].values() for m in pool]
    assert len(members) == 12
    for pool in checkpoint.pools["flops"].values():
        scores = [m.score for m in pool]
        assert scores == sorted(scores, reverse=True)
    # The release's LatencyPredictor computed each member's latency from the synthetic table.
    metric = ReleaseLatencyMetric.load("release_latency_cpu", "mobilenet_v1", os.path.join(FIXTURES, "lut"))
    for member in members:
        assert metric.value(member.config) == pytest.approx(member.release_value, rel=1e-12)
    resolutions = np.array([m.config.resolution for m in members])
    widths = np.array([m.config.widths for m in members])
    np.testing.assert_allclose(metric.values(resolutions, widths), [m.release_value for m in members], rtol=1e-12)


def test_mobilenet_v2_members_drop_the_ninth_multiplier(tmp_path):
    checkpoint = read_checkpoint(release_file(tmp_path, "mbv2"))
    members = [m for pools in checkpoint.pools.values() for pool in pools.values() for m in pool]
    assert members and all(len(m.config.widths) == 8 for m in members)
    assert all(0.75 <= m.dropped_multiplier <= 1.0 for m in members)


# --- safe unpickling ------------------------------------------------------------------


def test_the_reader_round_trips_a_checkpoint_written_without_torch(tmp_path):
    state = collections.OrderedDict(w=np.arange(24, dtype=np.float32).reshape(2, 3, 4), n=np.array(7, np.int64))
    path = tmp_path / "small.pt"
    write_torch_zip(path, {"model": state, "epoch": 3})
    loaded = safe_pickle.load_torch_checkpoint(str(path))
    np.testing.assert_array_equal(loaded["model"]["w"], state["w"])
    assert loaded["model"]["n"] == 7 and loaded["epoch"] == 3


class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_malicious_checkpoint_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    write_torch_zip(path, None, data_pkl=pickle.dumps({"model": _RunsShell(f"touch {marker}")}, protocol=2))
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"evil\.pt.*names posix\.system"):
        read_checkpoint(str(path))
    assert not marker.exists()
    # The same pickle as a latency table.
    lut = tmp_path / "mbv1_cpu.pkl"
    lut.write_bytes(pickle.dumps({"x": _RunsShell(f"touch {marker}")}))
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"mbv1_cpu\.pkl.*names posix\.system"):
        read_release_lut(str(lut))
    assert not marker.exists()


def test_a_latency_table_naming_another_class_is_refused(tmp_path):
    path = tmp_path / "mbv1_cpu.pkl"
    path.write_bytes(pickle.dumps({("MBV1Block", 112): collections.Counter()}))
    with pytest.raises(safe_pickle.UnsafePickleError, match="collections.Counter"):
        read_release_lut(str(path))


# --- bad input --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mbv1_contents(tmp_path_factory):
    return safe_pickle.load_torch_checkpoint(release_file(tmp_path_factory.mktemp("release"), "mbv1"))


def rewritten(tmp_path, contents, change) -> str:
    # Every array becomes a tensor in the rewrite: leave out numpy's random state (an ndarray).
    data = {k: v for k, v in contents.items() if k != "np_random_state"}
    data["model"] = collections.OrderedDict(contents["model"])
    change(data)
    path = tmp_path / "changed.pt"
    write_torch_zip(path, data)
    return str(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(ConfigError, match=r"notes\.pt: not a PyTorch checkpoint"):
        read_checkpoint(str(path))


def test_truncated_file(tmp_path):
    whole = open(release_file(tmp_path, "mbv1"), "rb").read()
    path = tmp_path / "cut.pt"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match=r"cut\.pt: .*truncated"):
        read_checkpoint(str(path))


def _stray_bytes_in_front(name, data):
    return b"\x00" * 8 + data if "/data/" in name else data


def test_a_record_longer_than_its_storage_is_refused_naming_the_key(tmp_path):
    """8 stray bytes in front of every record: read as before, each tensor would be shifted by two floats."""
    path = rewrite_records(release_file(tmp_path, "mbv1"), tmp_path / "stray.pt", _stray_bytes_in_front)
    with pytest.raises(ConfigError, match=r"stray\.pt: key 'model\.module\.features\.0\.0\.weight': its record "
                       r"mbv1/data/0 holds 3464 bytes, but its FloatStorage storage declares 3456"):
        read_checkpoint(path)


def test_a_record_shorter_than_its_storage_is_refused_naming_the_key(tmp_path):
    def cut_the_bias(name, data):
        return data[:-4] if name.endswith("/data/81") else data

    source = release_file(tmp_path, "mbv1")
    path = rewrite_records(source, tmp_path / "cut.pt", cut_the_bias)
    with pytest.raises(ConfigError, match=r"cut\.pt: key '[^']+': its record mbv1/data/81 holds \d+ bytes, but"):
        read_checkpoint(path)


def test_the_import_tool_refuses_a_shifted_checkpoint_without_a_traceback(tmp_path):
    path = rewrite_records(release_file(tmp_path, "mbv1"), tmp_path / "stray.pt", _stray_bytes_in_front)
    result = run_tool("import_release.py", f"--checkpoint={path}", f"--job_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert f"error: {path}: key 'model.module.features.0.0.weight': its record mbv1/data/0" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_record_given_twice_is_refused(tmp_path):
    source = release_file(tmp_path, "mbv2")
    path = tmp_path / "twice.pt"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as archive:
        for info in original.infolist():
            archive.writestr(info, original.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("mbv2/data/7", b"\x00" * 16)
    with pytest.raises(ConfigError, match=r"twice\.pt: record mbv2/data/7 appears twice"):
        read_checkpoint(str(path))


def test_a_weight_of_another_dtype_is_refused(tmp_path, mbv1_contents):
    def as_ints(d):
        d["model"]["module.classifier.0.bias"] = np.zeros(10, np.int64)

    with pytest.raises(ConfigError, match=r"key 'model\.classifier\.0\.bias': a int64 tensor; the release saves a "
                       "floating-point one"):
        read_checkpoint(rewritten(tmp_path, mbv1_contents, as_ints))


def test_a_declared_size_beyond_the_cap_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_pickle, "MAX_RECORD_BYTES", 100_000)
    with pytest.raises(ConfigError, match=r"mbv2\.pt: record mbv2/data/\d+ declares \d+ bytes, more than"):
        read_checkpoint(release_file(tmp_path, "mbv2"))


def test_a_checkpoint_without_pools(tmp_path, mbv1_contents):
    path = rewritten(tmp_path, mbv1_contents, lambda d: d.pop("arch_pools"))
    with pytest.raises(ConfigError, match=r"changed\.pt: key 'arch_pools': missing"):
        read_checkpoint(path)


def test_missing_key(tmp_path, mbv1_contents):
    path = rewritten(tmp_path, mbv1_contents, lambda d: d["model"].pop("module.features.5.4.bn.running_var"))
    with pytest.raises(ConfigError, match=r"changed\.pt: key 'model\.features\.5\.4\.bn\.running_var': missing"):
        read_checkpoint(path)


def test_extra_key(tmp_path, mbv1_contents):
    def add(d):
        d["model"]["module.features.14.0.weight"] = np.zeros((8, 8, 1, 1), np.float32)

    with pytest.raises(ConfigError, match=r"key 'model\.features\.14\.0\.weight': not a parameter"):
        read_checkpoint(rewritten(tmp_path, mbv1_contents, add))


def test_wrong_shape(tmp_path, mbv1_contents):
    def shrink(d):
        d["model"]["module.features.3.3.weight"] = np.zeros((120, 128, 1, 1), np.float32)

    with pytest.raises(ConfigError, match=r"key 'model\.features\.3\.3\.weight': shape \(120, 128, 1, 1\)"):
        read_checkpoint(rewritten(tmp_path, mbv1_contents, shrink))


def test_another_architecture(tmp_path, mbv1_contents):
    def resnet_like(d):
        d["model"] = collections.OrderedDict(
            {"module.conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
             "module.fc.weight": np.zeros((10, 2048), np.float32)}
        )
        d["model"]["module.classifier.0.weight"] = np.zeros((10, 2048), np.float32)

    with pytest.raises(ConfigError, match=r"changed\.pt: key 'model\.classifier\.0\.weight': .*2048 features"):
        read_checkpoint(rewritten(tmp_path, mbv1_contents, resnet_like))


def test_unknown_metric_in_pools(tmp_path, mbv1_contents):
    def energy(d):
        d["arch_pools"] = {**d["arch_pools"], "pools": {**d["arch_pools"]["pools"], "energy": {}}}

    with pytest.raises(ConfigError, match=r"changed\.pt: key \"arch_pools\.pools\['energy'\]\": unknown metric"):
        read_checkpoint(rewritten(tmp_path, mbv1_contents, energy))


def test_the_reader_agrees_with_torch_load_where_torch_is_installed(tmp_path):
    """Optional cross-check (pip install -e ".[torch]"); CI has no torch and skips it."""
    torch = pytest.importorskip("torch")
    path = release_file(tmp_path, "mbv2")
    ours = safe_pickle.load_torch_checkpoint(path)
    theirs = torch.load(path, weights_only=False)  # our own fixture: trusted
    assert list(ours["model"]) == list(theirs["model"])
    for key, tensor in theirs["model"].items():
        np.testing.assert_array_equal(ours["model"][key], tensor.numpy())
    assert ours["arch_pools"] == theirs["arch_pools"] and ours["last_epoch"] == theirs["last_epoch"]
    np.testing.assert_array_equal(ours["torch_rng_state"], theirs["torch_rng_state"].numpy())


def test_a_block_missing_from_a_release_table_is_named(tmp_path):
    table = read_release_lut(os.path.join(FIXTURES, "lut", "mbv1_cpu.pkl"))
    metric = ReleaseLatencyMetric("release_latency_cpu", "mobilenet_v1", table, "mbv1_cpu.pkl")
    with pytest.raises(ConfigError, match=r"mbv1_cpu\.pkl has no entry for BlockCfg\(block_type='Conv2d', in_size=224"):
        metric.value(SubnetConfig.uniform("mobilenet_v1", 224, 1.0))


def test_release_latency_metrics_need_the_release_tables():
    from pss_tf.run.config import TrainConfig

    config = TrainConfig(job_dir="/tmp/x").replace(metrics=("flops", "release_latency_gpu"))
    with pytest.raises(ConfigError, match="release_luts: required with release_latency_gpu"):
        config.validate()
    with pytest.raises(ConfigError, match="release_luts: given but no metric"):
        TrainConfig(job_dir="/tmp/x").replace(release_luts="/somewhere").validate()
