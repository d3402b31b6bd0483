"""An imported checkpoint whose BN statistics are the min net's, as the release's real ones are.

The release's last epoch re-estimates BN for the min net last: `reset_running_stats()`
clears every channel and only the min net's channels are estimated again, so every
wider channel holds mean 0 / variance 1. The fixture here is built the same way
from the release-written MobileNetV1 checkpoint: pss_tf's own calibration of the
min net (reset everything, re-estimate the active channels) on random images.
"""

import warnings

import numpy as np
import pytest
from release_support import LUTS, release_file, write_torch_zip

from pss_tf.errors import UncalibratedStatisticsWarning
from pss_tf.run.job import Job
from pss_tf import safe_pickle
from pss_tf.release.checkpoint import _layer_map, load_into_supernet, read_checkpoint
from pss_tf.release.importer import import_release
from pss_tf.space.config import SubnetConfig

MIN = SubnetConfig.uniform("mobilenet_v1", 128, 0.75)
MAX = SubnetConfig.uniform("mobilenet_v1", 224, 1.0)


def _batches(seed, count=2, size=160):
    rng = np.random.default_rng(seed)
    return [(rng.random((4, size, size, 3), dtype=np.float32) * 4 - 2) for _ in range(count)]


@pytest.fixture(scope="module")
def min_net_checkpoint(tmp_path_factory):
    """(path, {release BN key: (full channels, min-net channels)}) of the fixture."""
    from pss_tf.models.layers import SlimBatchNormalization
    from pss_tf.models.supernet import build_supernet

    root = tmp_path_factory.mktemp("min_net_bn")
    source = release_file(root, "mbv1")
    supernet = build_supernet("mobilenet_v1", num_classes=10, padding="symmetric")
    load_into_supernet(supernet, read_checkpoint(source))
    supernet.calibrate_bn(_batches(1), MIN)
    contents = safe_pickle.load_torch_checkpoint(source)
    contents.pop("np_random_state")  # the writer makes every array a tensor
    widths = {}
    for key, layer in _layer_map(supernet).items():
        if isinstance(layer, SlimBatchNormalization):
            mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
            contents["model"][f"module.{key}.bn.running_mean"] = mean
            contents["model"][f"module.{key}.bn.running_var"] = var
            widths[key] = (len(mean), int(np.count_nonzero((mean != 0) | (var != 1))))
    path = root / "pss_mbv1_min_bn.pt"
    write_torch_zip(path, contents)
    return str(path), widths


def test_the_fixture_holds_the_min_net_statistics_and_nothing_beyond(min_net_checkpoint):
    _, widths = min_net_checkpoint
    assert len(widths) == 27
    assert all(active < full for full, active in widths.values())
    assert widths["features.0.1"] == (32, 24) and widths["features.13.4"] == (1024, 768)


@pytest.fixture(scope="module")
def imported(min_net_checkpoint, tmp_path_factory):
    path, widths = min_net_checkpoint
    job_dir = tmp_path_factory.mktemp("imported") / "run"
    record = import_release(path, str(job_dir), release_luts=LUTS, log=lambda m: None)
    return str(job_dir), record, widths


def test_the_import_records_what_the_statistics_hold(imported):
    job_dir, record, widths = imported
    assert Job(job_dir).dir.read_imported()["bn_statistics"] == record["bn_statistics"]
    bn = record["bn_statistics"]
    assert bn["layers"] == bn["layers_with_reset_channels"] == 27
    assert bn["reset_channels"] == sum(full - active for full, active in widths.values())
    assert bn["channels"] == sum(full for full, _ in widths.values())
    assert bn["holds"].startswith("the statistics of the subnet the release calibrated last")
    assert bn["calibrate_before_use"] is True


def test_a_restored_import_warns_until_calibrated_and_only_the_min_net_is_right(imported):
    job_dir, _, _ = imported
    supernet = Job(job_dir).restore_supernet()
    images = _batches(9, count=1)[0]
    with pytest.warns(UncalibratedStatisticsWarning, match="imported from a PSS-Net release checkpoint"):
        uncalibrated_max = supernet(images, MAX, training=False).numpy()
    with pytest.warns(UncalibratedStatisticsWarning):
        uncalibrated_min = supernet(images, MIN, training=False).numpy()
    with pytest.warns(UncalibratedStatisticsWarning):
        supernet.subnet_weights(MAX)
    supernet.calibrate_bn(_batches(1), MIN)  # what the fixture's statistics are
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # calibrated: no warning
        calibrated_min = supernet(images, MIN, training=False).numpy()
        supernet.calibrate_bn(_batches(1), MAX)
        calibrated_max = supernet(images, MAX, training=False).numpy()
    scale = np.abs(calibrated_max).max()
    np.testing.assert_allclose(uncalibrated_min, calibrated_min, atol=1e-5 * np.abs(calibrated_min).max())
    assert np.abs(uncalibrated_max - calibrated_max).max() > 0.05 * scale


def test_restore_calibrates_on_request(imported, monkeypatch):
    from pss_tf.data import settings

    job_dir, _, _ = imported
    monkeypatch.setattr(settings, "calibration_stream", lambda run_config, data: _batches(3, count=3))
    job = Job(job_dir)
    supernet = job.restore_supernet(calibrate_for=MAX, calibration_batches=2)
    reference = job.restore_supernet()
    reference.calibrate_bn(_batches(3, count=2), MAX)
    images = _batches(9, count=1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(supernet(images, MAX, training=False).numpy(),
                                      reference(images, MAX, training=False).numpy())
    for ours, theirs in zip(supernet.batch_norm_layers(), reference.batch_norm_layers()):
        np.testing.assert_array_equal(ours.moving_mean.numpy(), theirs.moving_mean.numpy())
