"""The resource metrics a run may name: each declared once, here.

A declaration names the metric, its class (whose module measures it and says
its unit and how its targets are labelled), the words its target grid's flag
uses, how it loads for a run, and the table option it loads from, if any. A
run's configuration takes from it the `metrics` choices, one `<name>_targets`
option per metric and one option per table, and checks that a metric's table
is given exactly when the metric is named. Adding a metric is one declaration
below and its own module.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from pss_tf.errors import ConfigError
from pss_tf.latency.predictor import LatencyMetric, load_latency_metric
from pss_tf.latency.release_luts import ReleaseLatencyMetric
from pss_tf.space.metrics import FlopsMetric, Metric
from pss_tf.space.targets import TargetGrid


@dataclasses.dataclass(frozen=True)
class Table:
    """An option naming the file or directory a metric reads its table from."""

    field: str
    help: str  # the option's help, before the metrics that use it are named
    what: str  # what to give, in the error when it is missing


@dataclasses.dataclass(frozen=True)
class MetricKind:
    name: str
    metric_class: type[Metric]
    what: str  # what its target grid is of, in the `<name>_targets` option's help
    # load(name, run_config, table, costs) -> the metric for a run; `table` is the table option's value
    # and `costs` the keyword arguments a cost depends on besides the config (num_classes, small_input, in_channels).
    load: Callable[..., Metric]
    table: Table | None = None
    release_name: str | None = None  # its name in the PSS-Net release's checkpoints

    @property
    def unit(self) -> str:
        return self.metric_class.unit

    @property
    def targets_field(self) -> str:
        return f"{self.name}_targets"


LATENCY_LUT = Table(
    "latency_cpu_lut", "A latency lookup table measured by tools/build_lut.py", "a table built by tools/build_lut.py"
)
RELEASE_LUTS = Table(
    "release_luts", "The PSS-Net release's scripts/lut directory (mbv{1,2}_{cpu,gpu}.pkl)",
    "the release's scripts/lut directory",
)


def _release_latency(name, run_config, table, costs):
    return ReleaseLatencyMetric.load(name, run_config.space.model, table)


KINDS = {
    kind.name: kind
    for kind in (
        MetricKind(
            "flops", FlopsMetric, "FLOPs",
            lambda name, run_config, table, costs: FlopsMetric(run_config.space.model, name=name, **costs),
            release_name="flops",
        ),
        MetricKind(
            "latency_cpu", LatencyMetric, "CPU latency",
            lambda name, run_config, table, costs: load_latency_metric(
                table, run_config.space.model, run_config.search_space(), name=name,
                padding=run_config.space.padding, **costs,
            ),
            table=LATENCY_LUT,
        ),
        MetricKind(
            "release_latency_cpu", ReleaseLatencyMetric, "the release's CPU latency table", _release_latency,
            table=RELEASE_LUTS, release_name="latency_cpu",
        ),
        MetricKind(
            "release_latency_gpu", ReleaseLatencyMetric, "the release's GPU latency table", _release_latency,
            table=RELEASE_LUTS, release_name="latency_gpu",
        ),
    )
}

METRIC_NAMES = tuple(KINDS)
# The release's metric names -> pss_tf's (its own latency_cpu is measured here, in ms).
RELEASE_METRICS = {kind.release_name: kind.name for kind in KINDS.values() if kind.release_name}


def kind(name: str) -> MetricKind:
    """The declaration of the metric `name`; ConfigError naming `metrics` if there is none."""
    if name not in KINDS:
        raise ConfigError("metrics", f"unknown metric {name!r}; expected one of {list(METRIC_NAMES)}")
    return KINDS[name]


def metric_class(name: str) -> type[Metric]:
    """The class of a metric named in a run's configuration (for its unit and labels)."""
    return kind(name).metric_class


def tables() -> dict[str, tuple[Table, tuple[str, ...]]]:
    """`{field: (table, names of the metrics that load it)}`, in the order of the declarations."""
    found: dict[str, tuple[Table, tuple[str, ...]]] = {}
    for k in KINDS.values():
        if k.table is not None:
            table, users = found.get(k.table.field, (k.table, ()))
            found[k.table.field] = (table, users + (k.name,))
    return found


def target_options(option) -> list[tuple[str, type, object]]:
    """The options of a run's target grids and tables as (field, type, `option(...)`), in the order
    run.json records them: each metric's grid, and each table after the last metric that loads it."""
    by_field = tables()
    last_user = {users[-1]: field for field, (_, users) in by_field.items()}
    fields = []
    for k in KINDS.values():
        fields.append((k.targets_field, tuple[float, ...], option(
            (), help=f"Target grid of {k.what} in {k.unit}: start,stop,step; or N, about N round targets from the "
            "space's smallest subnet to its largest, both included; or empty, about 10 across the bulk of the space.",
        )))
        if k.name in last_user:
            table, users = by_field[last_user[k.name]]
            metrics = " and ".join(users)
            fields.append((table.field, str | None, option(
                None, help=f"{table.help}, for the {metrics} metric{'s' if len(users) > 1 else ''}.", path=True,
            )))
    return fields


def check_tables(targets) -> None:
    """A table option is given exactly when a metric named in `targets.metrics` loads it."""
    for field, (table, users) in tables().items():
        named = [m for m in targets.metrics if m in users]
        given = getattr(targets, field)
        if named and not given:
            raise ConfigError(field, f"required with {named[0]} in `metrics`: {table.what}")
        if given and not named:
            which = f"{users[0]} is not" if len(users) == 1 else f"no metric of {list(users)} is"
            raise ConfigError(field, f"given but {which} in `metrics`")


def _grid(metric: Metric, targets, space) -> TargetGrid:
    """The grid `<name>_targets` stands for (`TargetsConfig.grid_form`): a range as
    given; a count N spread from the space's smallest subnet to its largest; or
    chosen from the space's spread of the metric."""
    given, form = targets.grid(metric.name), targets.grid_form(metric.name)
    if form == "range":
        return TargetGrid(*given)
    if form == "count":
        return metric.span_grid(space, int(given[0]))
    return metric.auto_grid(space)


def metrics_for_run(run_config, num_classes: int, in_channels: int, names: tuple[str, ...] | None = None) -> dict:
    """A run's metrics by name (its `TrainConfig`), each on its configured or
    automatic grid; only those in `names` when given, so a latency table is read
    only where it is needed."""
    space = run_config.search_space()
    costs = dict(num_classes=num_classes, small_input=run_config.space.small_input, in_channels=in_channels)
    metrics = {}
    for name in run_config.targets.metrics:
        if names is not None and name not in names:
            continue
        declared = kind(name)
        table = getattr(run_config.targets, declared.table.field) if declared.table else None
        metric = declared.load(name, run_config, table, costs)
        metrics[name] = metric.with_grid(_grid(metric, run_config.targets, space))
    return metrics
