"""tools/import_release.py: a release checkpoint becomes a job directory every tool reads.

The checkpoints are the release-written fixtures (tests/fixtures/release); the
end-to-end test imports with a tiny ImageFolder and exports.
"""

import collections
import hashlib
import json
import os

import numpy as np
import pytest
from release_support import FIXTURES, LUTS, SHORT, VARIANTS, release_file, release_latency, with_pools, write_torch_zip
from support import run_tool

from pss_tf import safe_pickle
from pss_tf.errors import ConfigError
from pss_tf.release.checkpoint import read_checkpoint
from pss_tf.release.importer import import_release
from pss_tf.run.job import Job
from pss_tf.space.config import SubnetConfig

# |ours - release| <= RTOL * max |release logit| (as tests/release/test_release_checkpoint.py).
RTOL = 1e-4


def _json(*path):
    with open(os.path.join(*path)) as f:
        return json.load(f)


def _fixture_logits(short):
    fixture = _json(FIXTURES, f"{short}_logits.json")
    spec = fixture["images"]
    rng = np.random.default_rng(spec["seed"])
    images = (rng.random((spec["count"], 3, spec["size"], spec["size"]), dtype=np.float32) * 4 - 2).astype(np.float32)
    return images.transpose(0, 2, 3, 1), fixture["subnets"]


def _listing(directory):
    return sorted(os.listdir(directory))


@pytest.fixture(scope="module")
def imported_mbv1(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    source = release_file(root, "mbv1")
    job_dir = str(root / "pss_mbv1_m")
    record = import_release(source, job_dir, release_luts=LUTS, log=lambda m: None)
    return source, job_dir, record


def test_the_job_directory_records_the_release_run(imported_mbv1):
    source, job_dir, record = imported_mbv1
    assert _listing(job_dir) == ["checkpoints", "pools.json", "run.json", "winners.json"]
    run = _json(job_dir, "run.json")
    assert run["space"]["model"] == "mobilenet_v1" and run["space"]["padding"] == "symmetric"
    assert run["targets"]["metrics"] == ["flops", "release_latency_cpu"]
    assert run["targets"]["flops_targets"] == [110, 570, 10]
    assert run["targets"]["release_latency_cpu_targets"] == [10000, 31000, 1000]
    assert run["optimization"]["learning_rate"] == 0.3 and run["sampling"]["pool_capacity"] == 50
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    imported = run["imported"]
    assert imported["sha256"] == digest == record["sha256"]
    assert imported["epoch"] == 249 and imported["source"] == os.path.abspath(source)
    assert imported["winners"] == "top-scored, unvalidated"


def test_pools_hold_every_release_member_with_its_score(imported_mbv1):
    source, job_dir, _ = imported_mbv1
    checkpoint = read_checkpoint(source)
    pools = Job(job_dir).pools()
    names = {"flops": "flops", "latency_cpu": "release_latency_cpu"}
    expected = {
        (names[metric], float(target), member.config): member.score
        for metric, by_target in checkpoint.pools.items()
        for target, members in by_target.items()
        for member in members
    }
    found = {(key[0], key[1], config): score for key in pools.keys() for config, score in pools.members(key)}
    assert found == expected and len(found) == 24


def test_winners_are_the_top_scored_members_unvalidated(imported_mbv1):
    _, job_dir, _ = imported_mbv1
    job = Job(job_dir)
    pools = job.pools()
    winners = job.winners()
    assert len(winners) == len(pools.keys()) == 16
    metrics = job.metrics
    for entry, config in winners:
        assert "val_top1" not in entry and entry["validated"] is False
        assert (config, entry["score"]) == pools.winner((entry["metric"], entry["target"]))
        assert entry["value"] == metrics[entry["metric"]].value(config)
        if entry["metric"] == "release_latency_cpu":  # the release's own LatencyPredictor value
            assert entry["value"] == pytest.approx(entry["release_value"], rel=1e-12)
            assert entry["name"] == f"release_latency_cpu_{entry['target']:g}us"


def test_restored_supernet_computes_what_the_release_computes(imported_mbv1):
    _, job_dir, _ = imported_mbv1
    job = Job(job_dir)  # the data (TFDS imagenet2012) is not here: the imported classes stand in
    assert job.info.num_classes == 10
    supernet = job.restore_supernet()
    assert supernet.padding == "symmetric"
    images, subnets = _fixture_logits("mbv1")
    for subnet in subnets[:2]:  # the max and the min net
        config = SubnetConfig("mobilenet_v1", subnet["config"]["resolution"], tuple(subnet["config"]["stage_cout_mults"]))
        reference = np.asarray(subnet["logits"])
        logits = supernet(images, config, training=False).numpy()
        assert np.abs(logits - reference).max() <= RTOL * np.abs(reference).max()


def test_an_existing_job_dir_is_refused_and_left_alone(tmp_path):
    job_dir = tmp_path / "run"
    job_dir.mkdir()
    (job_dir / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists"):
        import_release(release_file(tmp_path, "mbv1"), str(job_dir), release_luts=LUTS)
    assert _listing(job_dir) == ["notes.txt"]


def test_latency_pools_without_the_release_tables_are_refused_naming_them(tmp_path):
    source = release_file(tmp_path, "mbv2")
    with pytest.raises(ConfigError, match=r"mbv2\.pt has latency pools \(arch_pools\.pools\['latency_gpu'\]\)"):
        import_release(source, str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"mbv2_gpu\.pkl is missing"):
        import_release(source, str(tmp_path / "run"), release_luts=str(tmp_path))
    assert _listing(tmp_path) == ["mbv2.pt"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("model", sorted(SHORT))
def test_latency_supernets_of_both_models_import_with_the_tables(tmp_path, model, variant):
    """PSS-MBV{1,2}-C, -G and -M: pools of the release's latency metrics, the fixture tables as the
    release's scripts/lut (they hold MobileNetV2's last conv at 1280 channels, as the real ones do)."""
    from pss_tf.latency.release_luts import read_release_lut, release_blocks

    contents = safe_pickle.load_torch_checkpoint(release_file(tmp_path, SHORT[model]))
    path = tmp_path / f"pss_{SHORT[model]}_{variant.lower()}.pt"
    write_torch_zip(path, with_pools(contents, model, VARIANTS[variant]))
    job_dir = tmp_path / "run"
    record = import_release(str(path), str(job_dir), release_luts=LUTS, log=lambda m: None)
    names = {"flops": "flops", "latency_cpu": "release_latency_cpu", "latency_gpu": "release_latency_gpu"}
    expected = [names[m] for m in VARIANTS[variant]]
    assert record["release_metrics"] == dict(zip(VARIANTS[variant], expected))
    run = _json(job_dir, "run.json")
    assert run["targets"]["metrics"] == expected and run["targets"]["release_luts"] == os.path.abspath(LUTS)
    job = Job(str(job_dir))
    checkpoint = read_checkpoint(str(path))
    members = sum(len(ms) for pools in checkpoint.pools.values() for ms in pools.values())
    assert sum(job.pools().size(k) for k in job.pools().keys()) == members - record["merged_members"] > 0
    winners = job.winners()
    assert {entry["metric"] for entry, _ in winners} == set(expected)
    for entry, config in winners:
        assert entry["value"] == pytest.approx(job.metrics[entry["metric"]].value(config), rel=1e-12)
        if entry["metric"] == "flops":
            continue
        table = read_release_lut(os.path.join(LUTS, f"{SHORT[model]}_{entry['metric'].split('_')[-1]}.pkl"))
        if model == "mobilenet_v1":  # the same blocks as the release's
            assert entry["value"] == pytest.approx(entry["release_value"], rel=1e-12)
        else:  # the release charged the last conv and the classifier at the ninth multiplier
            ninth = entry["release_ninth_multiplier"]
            release_cfg = {"resolution": config.resolution, "stage_cout_mults": [*config.widths, ninth]}
            assert entry["release_value"] == pytest.approx(release_latency(table, model, release_cfg), rel=1e-12)
            blocks = release_blocks(config)
            assert blocks[-2][3] == 1280 and blocks[-1][2] == 1280
            assert entry["value"] == pytest.approx(sum(table[b] for b in blocks), rel=1e-12)


def _image_folder(root, classes: int, per_class: int = 2, size: int = 40):
    import PIL.Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            directory = root / split / f"class{c:02d}"
            directory.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                PIL.Image.fromarray(pixels).save(directory / f"{i}.png")
    return str(root)


def test_a_failed_import_leaves_nothing_behind(tmp_path):
    """The data has 3 classes, the checkpoint 10: found after the staging directory was written."""
    source = release_file(tmp_path, "mbv1")
    data = _image_folder(tmp_path / "data", classes=3, per_class=1)
    with pytest.raises(ConfigError, match="has 3 classes, the checkpoint 10"):
        import_release(source, str(tmp_path / "run"), release_luts=LUTS, data_dir=data)
    assert _listing(tmp_path) == ["data", "mbv1.pt"]


def test_the_tool_names_the_flag(tmp_path):
    result = run_tool("import_release.py", f"--checkpoint={release_file(tmp_path, 'mbv2')}",
                      f"--job_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "error: --release_luts: " in result.stderr and "latency_gpu" in result.stderr
    assert not (tmp_path / "run").exists()


# --- with data, then export --------------------------------------------------------


def _one_pool_checkpoint(tmp_path) -> str:
    """The MobileNetV2 fixture with only its largest FLOPs pool (a short import and export)."""
    contents = safe_pickle.load_torch_checkpoint(release_file(tmp_path, "mbv2"))
    pools = contents["arch_pools"]["pools"]["flops"]
    keep = sorted(pools)[-1:]
    contents["arch_pools"] = {
        "max_size": 50, "infer_metric_target_list": {"flops": keep},
        "pools": {"flops": {t: pools[t] for t in keep}},
    }
    contents.pop("np_random_state")  # every array of the rewrite becomes a tensor
    contents["model"] = collections.OrderedDict(contents["model"])
    path = tmp_path / "mbv2_one_pool.pt"
    write_torch_zip(path, contents)
    return str(path)


@pytest.mark.slow
def test_import_with_data_validates_and_export_serves_the_same_outputs(tmp_path):
    import tensorflow as tf

    from pss_tf.export import tflite
    from pss_tf.export.client_data import ClientData
    from pss_tf.training.evaluation import make_evaluator

    data = _image_folder(tmp_path / "data", classes=10)
    job_dir = tmp_path / "run"
    result = run_tool("import_release.py", f"--checkpoint={_one_pool_checkpoint(tmp_path)}", f"--job_dir={job_dir}",
                      f"--data_dir={data}", "--calibration_batches=1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    winners = _json(job_dir, "winners.json")
    assert len(winners) == 1 and all(w["validated"] and 0.0 <= w["val_top1"] <= 1.0 for w in winners)
    assert _json(job_dir, "run.json")["data"]["dataset"] == "imagefolder"

    out = tmp_path / "export"
    result = run_tool("export.py", f"--job_dir={job_dir}", f"--export_dir={out}", "--calibration_batches=1",
                      "--tflite_kinds=float32", "--nobundle", "--noevaluate", "--nolatency")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    manifest = _json(out, "manifest.json")
    loaded = tf.saved_model.load(os.path.join(out, "serving", "pss_mobilenet_v2", "1"))
    assert {"adaptive", "adaptive_flops", "serving_default"} <= set(loaded.signatures)

    job = Job(str(job_dir))
    supernet = job.restore_supernet()
    evaluator = make_evaluator(supernet, job.run_config, job.data, 1)  # the export's calibration
    images = next(ClientData(job.data).batches("val", 4))[0]
    prepared = job.data.prepare_batch(tf.constant(images))
    for subnet in manifest["subnets"]:
        config = SubnetConfig.from_dict(subnet["config"])
        evaluator.calibrate(config)
        expected = tf.nn.softmax(supernet(prepared, config, training=False)).numpy()
        served = loaded.signatures[subnet["name"]](images=tf.constant(images))["probabilities"].numpy()
        np.testing.assert_allclose(served, expected, atol=1e-5)
        content = open(os.path.join(out, subnet["tflite"]["float32"]["file"]), "rb").read()
        mobile = tflite.predict(tflite.signature_runner(content, subnet["name"]), images)["probabilities"]
        np.testing.assert_allclose(mobile, expected, atol=1e-4)
