"""The metric registry (`pss_tf.run.metrics`): one declaration per metric gives the
run's options, their order in run.json, the checks of their tables and the loaders."""

import dataclasses
import json
import os

import pytest
from support import smoke_config

from pss_tf import config_flags
from pss_tf.errors import ConfigError
from pss_tf.latency.predictor import LatencyMetric
from pss_tf.latency.release_luts import ReleaseLatencyMetric
from pss_tf.run import metrics
from pss_tf.run.config import TargetsConfig, TrainConfig
from pss_tf.space.metrics import FlopsMetric
from pss_tf.space.targets import TargetGrid

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "release")

# run.json's targets group as pss_tf wrote it before the registry: names, order and defaults.
RECORDED_TARGETS = {
    "metrics": ["flops"],
    "flops_targets": [],
    "latency_cpu_targets": [],
    "latency_cpu_lut": None,
    "release_latency_cpu_targets": [],
    "release_latency_gpu_targets": [],
    "release_luts": None,
}

GRID_FORMS = (
    "start,stop,step; or N, about N round targets from the space's smallest subnet to its largest, both "
    "included; or empty, about 10 across the bulk of the space."
)


def test_the_targets_options_are_declared_from_the_registry_in_the_order_run_json_records():
    assert json.dumps(TrainConfig().to_dict()["targets"]) == json.dumps(RECORDED_TARGETS)
    assert [f.name for f in dataclasses.fields(TargetsConfig)] == list(RECORDED_TARGETS)
    assert metrics.METRIC_NAMES == ("flops", "latency_cpu", "release_latency_cpu", "release_latency_gpu")
    leaves = {leaf.name: leaf for leaf in config_flags.leaves(TrainConfig) if leaf.path[0] == "targets"}
    assert leaves["metrics"].choices == metrics.METRIC_NAMES
    for name, unit in (("flops", "M MACs"), ("latency_cpu", "ms"), ("release_latency_cpu", "us"),
                       ("release_latency_gpu", "us")):
        assert metrics.kind(name).unit == metrics.metric_class(name).unit == unit
        assert leaves[f"{name}_targets"].help.endswith(f" in {unit}: {GRID_FORMS}")
    assert leaves["latency_cpu_lut"].help.endswith("for the latency_cpu metric.")
    assert leaves["release_luts"].help.endswith("for the release_latency_cpu and release_latency_gpu metrics.")


def test_a_recorded_targets_group_reads_back_unchanged():
    recorded = {**RECORDED_TARGETS, "metrics": ["flops", "release_latency_gpu"], "flops_targets": [110, 570, 10],
                "release_latency_gpu_targets": [70, 240, 10], "release_luts": "/lut"}
    config = TrainConfig.from_dict({**TrainConfig(job_dir="j").to_dict(), "targets": recorded})
    assert config.targets.grid("flops") == (110.0, 570.0, 10.0)
    assert config.targets.grid("release_latency_gpu") == (70.0, 240.0, 10.0)
    assert config.to_dict()["targets"] == {**recorded, "flops_targets": [110.0, 570.0, 10.0],
                                           "release_latency_gpu_targets": [70.0, 240.0, 10.0]}
    config.validate()


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"metrics": ("latency_cpu",)}, "latency_cpu_lut",
         "required with latency_cpu in `metrics`: a table built by tools/build_lut.py"),
        ({"latency_cpu_lut": "t.json"}, "latency_cpu_lut", "given but latency_cpu is not in `metrics`"),
        ({"metrics": ("flops", "release_latency_gpu")}, "release_luts",
         "required with release_latency_gpu in `metrics`: the release's scripts/lut directory"),
        ({"release_luts": "/lut"}, "release_luts",
         "given but no metric of ['release_latency_cpu', 'release_latency_gpu'] is in `metrics`"),
        ({"release_latency_cpu_targets": (1.0, 2.0, 1.0)}, "release_latency_cpu_targets",
         "metric 'release_latency_cpu' is not in `metrics`"),
    ],
)
def test_a_table_is_given_exactly_when_a_metric_that_loads_it_is_named(changes, field, message):
    with pytest.raises(ConfigError) as raised:
        TrainConfig(job_dir="j").replace(**changes).validate()
    assert (raised.value.field, raised.value.message) == (field, message)


def test_the_release_names_and_the_classes_come_from_the_declarations():
    assert metrics.RELEASE_METRICS == {
        "flops": "flops", "latency_cpu": "release_latency_cpu", "latency_gpu": "release_latency_gpu"
    }
    assert [metrics.metric_class(n) for n in metrics.METRIC_NAMES] == [
        FlopsMetric, LatencyMetric, ReleaseLatencyMetric, ReleaseLatencyMetric
    ]
    with pytest.raises(ConfigError) as raised:
        metrics.kind("energy")
    assert raised.value.field == "metrics" and "energy" in raised.value.message


def test_a_run_loads_each_named_metric_through_its_declaration():
    config = TrainConfig(job_dir="j").replace(
        metrics=("flops", "release_latency_cpu"), flops_targets=(110.0, 570.0, 10.0),
        release_latency_cpu_targets=(10000.0, 31000.0, 1000.0), release_luts=os.path.join(FIXTURES, "lut"),
    )
    loaded = metrics.metrics_for_run(config, num_classes=1000, in_channels=3)
    assert list(loaded) == ["flops", "release_latency_cpu"]
    flops, latency = loaded["flops"], loaded["release_latency_cpu"]
    assert isinstance(flops, FlopsMetric) and (flops.num_classes, flops.small_input) == (1000, False)
    assert isinstance(latency, ReleaseLatencyMetric) and os.path.basename(latency.path) == "mbv1_cpu.pkl"
    assert latency.grid.targets[0] == 10000.0 and flops.grid.targets[-1] == 570.0
    only = metrics.metrics_for_run(config, 1000, 3, names=("flops",))
    assert list(only) == ["flops"]


@pytest.mark.parametrize(
    "model, grid",
    # MobileNetV1's is the grid configs/smoke.flags gave as 4,12,2 before it asked for a count.
    [("mobilenet_v1", TargetGrid(4, 12, 2)), ("mobilenet_v3_small", TargetGrid(0.75, 2, 0.25))],
)
def test_a_count_of_targets_spans_the_space_from_its_smallest_subnet_to_its_largest(model, grid):
    config = smoke_config("j", model=model)
    assert config.targets.grid("flops") == (5.0,)
    config.validate()
    flops = metrics.metrics_for_run(config, num_classes=4, in_channels=3)["flops"]
    space = config.search_space()
    assert flops.grid == grid
    assert flops.grid.snap(flops.value(space.min_config())) == grid.start
    assert flops.grid.snap(flops.value(space.max_config())) == grid.stop


@pytest.mark.parametrize(
    "given, form",
    [((110.0, 570.0, 10.0), "range"), ((5.0,), "count"), ((), "automatic"), ((2.0, 5.0), "invalid")],
)
def test_the_form_of_a_targets_value_is_named_in_one_place(given, form):
    """`grid_form` is what both the grid and the trainer's "chosen from the space" report follow."""
    config = TrainConfig(job_dir="j").replace(flops_targets=given, metrics=("flops",))
    assert config.targets.grid_form("flops") == form
    if form == "invalid":
        return
    flops = metrics.metrics_for_run(config, num_classes=1000, in_channels=3)["flops"]
    if form == "range":
        assert flops.grid == TargetGrid(*given)
    else:
        space = config.search_space()
        chosen = flops.span_grid(space, 5) if form == "count" else flops.auto_grid(space)
        assert flops.grid == chosen and flops.grid != TargetGrid(110.0, 570.0, 10.0)


@pytest.mark.parametrize(
    "given, message",
    [
        ((1.0,), "a count of targets must be an integer of at least 2, got 1"),
        ((4.5,), "a count of targets must be an integer of at least 2, got 4.5"),
        ((2.0, 5.0), "expected start,stop,step or a count of targets N, got [2.0, 5.0]"),
    ],
)
def test_a_bad_targets_value_is_refused_naming_its_option(given, message):
    with pytest.raises(ConfigError) as raised:
        TrainConfig(job_dir="j").replace(flops_targets=given).validate()
    assert (raised.value.field, raised.value.message) == ("flops_targets", message)


def test_a_new_metric_is_one_declaration(monkeypatch):
    """A declared metric gets its targets option (and its table's) without another file changing."""
    energy = metrics.MetricKind(
        "energy", FlopsMetric, "energy", lambda name, run_config, table, costs: None,
        table=metrics.Table("energy_table", "A table of energies", "an energy table"),
    )
    monkeypatch.setitem(metrics.KINDS, "energy", energy)
    fields = [(name, options.metadata["help"]) for name, _, options in metrics.target_options(config_flags.option)]
    assert fields[-2:] == [
        ("energy_targets", f"Target grid of energy in M MACs: {GRID_FORMS}"),
        ("energy_table", "A table of energies, for the energy metric."),
    ]
