"""pss_tf.checks and the ranges options declare: one set of checks, one wording, the field named."""

import dataclasses

import pytest
from absl import flags

from pss_tf import checks, config_flags
from pss_tf.config_flags import option
from pss_tf.errors import ConfigError


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: checks.number("a", True), "a: must be a finite number, got True"),
        (lambda: checks.number("a", float("nan")), "a: must be a finite number, got nan"),
        (lambda: checks.number("a", "1"), "a: must be a finite number, got '1'"),
        (lambda: checks.number("a", 0.0, above=0.0), "a: must be a positive number, got 0.0"),
        (lambda: checks.number("a", -1, minimum=0.0), "a: must be a finite number of at least 0, got -1"),
        (lambda: checks.number("a", 1.0, minimum=0.0, below=1.0), r"a: must lie in [0, 1), got 1.0"),
        (lambda: checks.number("a", 0.0, above=0.0, maximum=1.0), r"a: must lie in (0, 1], got 0.0"),
        (lambda: checks.integer("n", 0, 1), "n: must be an int of at least 1, got 0"),
        (lambda: checks.integer("n", True, 0), "n: must be an int of at least 0, got True"),
        (lambda: checks.integer("n", 2.0, 0), "n: must be an int of at least 0, got 2.0"),
        (lambda: checks.integer("n", 4, 0, maximum=3), r"n: must be an int in [0, 3], got 4"),
        (lambda: checks.probability("p", 1.5), r"p: must lie in [0, 1], got 1.5"),
    ],
)
def test_bad_values_raise_config_errors_naming_the_field(call, message):
    with pytest.raises(ConfigError) as raised:
        call()
    assert str(raised.value) == message and raised.value.field == message.split(":")[0]


def test_good_values_come_back_as_their_kind_and_library_arguments_raise_plain_value_errors():
    assert checks.integer("n", 3, 1) == 3 and type(checks.integer("n", 3, 1)) is int
    assert checks.number("x", 1, minimum=0.0) == 1.0 and type(checks.number("x", 1)) is float
    assert checks.number("x", 0.5, above=0.0, maximum=1.0) == 0.5
    with pytest.raises(ValueError) as raised:
        checks.integer("capacity", 0, 1, error=ValueError)
    assert type(raised.value) is ValueError and str(raised.value) == "capacity: must be an int of at least 1, got 0"
    with pytest.raises(TypeError):
        checks.Bounds(minimum=0.0, above=0.0)


@dataclasses.dataclass(frozen=True)
class _Options:
    count: int = option(1, help="How many.", minimum=1)
    rate: float = option(0.5, help="A rate.", above=0.0, below=1.0)
    name: str = option("a", help="A name.", choices=("a", "b"))
    limit: float | None = option(None, help="Optional.", minimum=0.0)


def test_declared_ranges_are_checked_and_stated_in_the_flag_help():
    config_flags.check_declared(_Options())
    for changes, field in ((dict(count=0), "count"), (dict(rate=1.0), "rate"), (dict(name="c"), "name"),
                           (dict(limit=-1.0), "limit"), (dict(count=True), "count")):
        with pytest.raises(ConfigError) as raised:
            config_flags.check_declared(dataclasses.replace(_Options(), **changes))
        assert raised.value.field == field
    flag_values = flags.FlagValues()
    config_flags.define_flags(_Options, flag_values)
    assert flag_values["count"].help == "How many; at least 1."
    assert flag_values["rate"].help == "A rate; in (0, 1)."
    assert flag_values["limit"].help == "Optional; at least 0."


def test_every_tool_option_class_declares_ranges_with_its_options():
    from pss_tf.export.options import ExportOptions
    from pss_tf.finetune.options import FinetuneOptions
    from pss_tf.run.config import TrainConfig
    from pss_tf.search.options import SearchOptions

    for cls, field in ((TrainConfig, "pool_capacity"), (SearchOptions, "population"), (ExportOptions, "latency_threads"),
                       (FinetuneOptions, "epochs")):
        (leaf,) = [leaf for leaf in config_flags.leaves(cls) if leaf.name == field]
        assert leaf.bounds == checks.Bounds(minimum=1)
