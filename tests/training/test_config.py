"""TrainConfig: groups, flags derived from fields, the shipped flagfiles, run.json of every version."""

import glob
import json
import os

import pytest
from absl import flags
from support import ROOT

from pss_tf import config_flags
from pss_tf.errors import ConfigError
from pss_tf.run.config import TrainConfig


def _parse(*argv) -> TrainConfig:
    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values)
    flag_values(["train.py", *argv])
    return config_flags.from_flags(TrainConfig, flag_values)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags"))), ids=os.path.basename)
def test_every_shipped_flagfile_parses_and_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # Flagfiles name other flagfiles and tables relative to the repository.
    config = _parse(f"--flagfile={path}", "--job_dir=/tmp/unused")
    config.validate()
    assert config.job_dir == "/tmp/unused"


def test_the_paper_configs_are_the_release_recipe(monkeypatch):
    monkeypatch.chdir(ROOT)
    for name, model, grid in (("mbv1", "mobilenet_v1", (110, 570, 10)), ("mbv2", "mobilenet_v2", (70, 300, 10))):
        config = _parse(f"--flagfile=configs/{name}.flags", "--job_dir=x")
        values = config.leaf_values()
        assert values["model"] == model and values["flops_targets"] == grid
        expected = dict(
            learning_rate=0.3, global_batch_size=1024, warmup_epochs=0.0, epochs=250, momentum=0.9,
            weight_decay=1e-4, mixed_precision="none", crop_scale_min=0.25, color_jitter=0.4, lighting=0.1,
            normalization="imagenet", bn_epsilon=1e-5, resize_align_corners=True, resolution_end_weight=0.5,
            sampler_extremes=False, sampler_samples=100_000, pool_capacity=50, p_fresh_start=1.0, p_fresh_end=0.01,
            temperature_start=1.0, temperature_end=0.01, final_top_k=5, calibration_batches=9,
        )
        assert {k: values[k] for k in expected} == expected
        # The defaults are the release's too: the paper configs only say so explicitly.
        defaults = TrainConfig().leaf_values()
        assert {k: defaults[k] for k in expected if k not in ("mixed_precision",)} == {
            k: v for k, v in expected.items() if k != "mixed_precision"
        }


@pytest.mark.parametrize(
    "name, ends, grid",
    [
        # One grey channel, 10 classes: what the files' comments state.
        ("fashion_mnist", (1.759456, 10.867264), (2.0, 11.0, 1.0)),
        ("fashion_mnist_mbv3_small", (1.274024, 4.959328), (1.5, 5.0, 0.5)),
    ],
)
def test_the_fashion_mnist_grids_span_their_spaces_as_their_comments_say(name, ends, grid, monkeypatch):
    from pss_tf.run.metrics import metrics_for_run

    monkeypatch.chdir(ROOT)
    config = _parse(f"--flagfile=configs/{name}.flags", "--job_dir=x")
    flops = metrics_for_run(config, num_classes=10, in_channels=1)["flops"]
    space = config.search_space()
    low, high = flops.value(space.min_config()), flops.value(space.max_config())
    assert (low, high) == ends and config.targets.grid("flops") == grid
    assert (flops.grid.snap(low), flops.grid.snap(high)) == (grid[0], grid[1])


def test_nested_json_round_trip_and_flat_names():
    config = TrainConfig(job_dir="j").replace(min_width=0.3, flops_targets=(2.0, 11.0, 1.0), metrics=("flops",))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["space"]["min_width"] == 0.3 and data["targets"]["flops_targets"] == [2.0, 11.0, 1.0]
    assert TrainConfig.from_dict(data) == config
    with pytest.raises(ConfigError, match="unknown field"):
        TrainConfig.from_dict({**data, "space": {**data["space"], "min_witdh": 0.3}})


def test_a_run_json_of_pss_tf_0_1_loads_with_the_behaviour_it_had():
    """Flat run.json files came before the groups: they keep what those runs did
    (half-pixel resize, BN epsilon 1e-3, uniform resolutions, x/127.5-1 inputs, pools at
    the grid's ends, the slimmed MobileNetV2 tail)."""
    old = {
        "job_dir": "runs/old", "model": "mobilenet_v2", "small_input": True, "dataset": "fashion_mnist",
        "min_resolution": 20, "max_resolution": 28, "resolution_step": 4, "min_width": 0.25, "max_width": 0.5,
        "metrics": ["flops"], "targets": {"flops": [2, 11, 1]}, "sampler": "pss", "learning_rate": 0.1,
        "crop_scale_min": 0.5, "epochs": 4,
    }
    config = TrainConfig.from_dict(old)
    values = config.leaf_values()
    assert values["model"] == "mobilenet_v2_slim_last_conv"
    assert values["flops_targets"] == (2.0, 11.0, 1.0) and values["learning_rate"] == 0.1
    assert (values["bn_epsilon"], values["resize_align_corners"], values["resolution_end_weight"]) == (1e-3, False, 1.0)
    assert (values["normalization"], values["color_jitter"], values["lighting"]) == ("minus_one_to_one", 0.0, 0.0)
    assert values["sampler_extremes"] is True
    with pytest.raises(ConfigError, match="unknown field"):
        TrainConfig.from_dict({**old, "no_such_flag": 1})


def test_bad_values_name_their_flag_on_the_command_line():
    with pytest.raises(ConfigError) as raised:
        _parse("--job_dir=x", "--flops_targets=2,a,1")
    assert config_flags.flag_message(raised.value, {"flops_targets"}).startswith("--flops_targets: ")
    config = _parse("--job_dir=x", "--metrics=flops,energy")
    with pytest.raises(ConfigError) as raised:
        config.validate()
    assert raised.value.field == "metrics" and "energy" in str(raised.value)
    message = config_flags.flag_message(ConfigError("job_dir", "continue it with `resume`"), {"job_dir", "resume"})
    assert message == "--job_dir: continue it with --resume"


@pytest.mark.parametrize(
    "argv, runs",
    [
        ((), "pss"),
        (("--mode=pse", "--parallel_subnets=2"), "conditional"),  # PSE-Net keeps no pools.
        (("--mode=pse", "--parallel_subnets=2", "--sampler=pss"), "pss"),
        (("--sampler=uniform",), "uniform"),
    ],
)
def test_auto_sampler_is_the_modes_own_and_a_given_one_wins(argv, runs, tmp_path):
    from support import smoke_config

    from pss_tf.run.job import JobDir
    from pss_tf.run.metrics import metrics_for_run
    from pss_tf.training.modes.base import SubnetSource

    sampling = _parse("--job_dir=x", *argv).sampling
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--sampler=")]
    assert sampling.sampler == (given[0] if given else "auto") and sampling.subnet_sampler == runs
    # What a run builds follows it: PSS's pools only with pss.
    run_config = smoke_config(tmp_path, mode=sampling.mode, parallel_subnets=sampling.parallel_subnets,
                              sampler=sampling.sampler, sampler_samples=500)
    metrics = metrics_for_run(run_config, num_classes=4, in_channels=3)
    source = SubnetSource(run_config, run_config.search_space(), metrics, None, JobDir(str(tmp_path)))
    assert type(source.sampler).__name__ == ("UniformSampler" if runs == "uniform" else "PrioritizedSampler")
    assert getattr(source.sampler, "use_pools", False) == (runs == "pss")


def test_batch_norm_kernel_is_a_runtime_flag_that_may_change_on_resume():
    assert TrainConfig().runtime.batch_norm_kernel == "auto"
    assert _parse("--batch_norm_kernel=flat").runtime.batch_norm_kernel == "flat"
    with pytest.raises(flags.IllegalFlagValueError, match="batch_norm_kernel"):
        _parse("--batch_norm_kernel=nchw")
    leaf = next(leaf for leaf in config_flags.leaves(TrainConfig) if leaf.name == "batch_norm_kernel")
    assert leaf.resumable  # A machine's choice, not the experiment's: a run may resume on another CPU.
