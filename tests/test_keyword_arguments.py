"""config_flags.keyword_arguments: config fields reach the code they configure without hand copies."""

import dataclasses

import pytest

from pss_tf import config_flags
from pss_tf.run.config import TrainConfig
from pss_tf.search.driver import evolution_arguments
from pss_tf.search.options import EvolutionOptions


@dataclasses.dataclass(frozen=True)
class _Group:
    size: int = 3
    rate: float = 0.5
    seed: int = 7


def _target(size, learning_rate, extra=None):
    return size, learning_rate, extra


def test_fields_go_by_name_renamed_or_given_and_given_wins():
    arguments = config_flags.keyword_arguments(
        _target, _Group(), renamed={"rate": "learning_rate"}, elsewhere=("seed",), extra=1
    )
    assert arguments == {"size": 3, "learning_rate": 0.5, "extra": 1}
    assert config_flags.keyword_arguments(_target, _Group(), renamed={"rate": "learning_rate"},
                                          elsewhere=("seed",), size=9)["size"] == 9


def test_a_field_that_reaches_nothing_is_an_error():
    with pytest.raises(TypeError, match=r"_Group field\(s\) \['seed'\] reach neither _target"):
        config_flags.keyword_arguments(_target, _Group(), renamed={"rate": "learning_rate"})
    with pytest.raises(TypeError, match=r"_target takes no argument\(s\) \['colour'\]"):
        config_flags.keyword_arguments(_target, _Group(), renamed={"rate": "learning_rate"}, elsewhere=("seed",),
                                       colour=1)


def test_every_field_of_the_run_config_reaches_what_it_configures():
    """The builders of the supernet, the search space, the data settings and the
    evolution each take every field meant for them (changed values arrive)."""
    config = config_flags.replace(
        TrainConfig(job_dir="x"), model="mobilenet_v2", small_input=True, bn_epsilon=1e-3,
        resize_align_corners=False, padding="symmetric", min_width=0.5, resolution_end_weight=1.0,
        crop_scale_min=0.3, synthetic_channels=1, holdout_examples=5, holdout_selection="last", classes=(1, 2),
        seed=4, crop_fraction=0.9, color_jitter=0.2,
    )
    supernet = config.space.supernet_arguments(num_classes=3)
    assert supernet == {"model_name": "mobilenet_v2", "small_input": True, "bn_epsilon": 1e-3, "align_corners": False,
                        "padding": "symmetric", "num_classes": 3}
    assert config.search_space().min_width == 0.5 and config.search_space().resolution_end_weight == 1.0
    data = config.data_settings()
    assert (data.crop_scale, data.synthetic.channels, data.holdout_examples, data.holdout_selection,
            data.selection_seed, data.classes, data.crop_fraction, data.color_jitter) == (
        (0.3, 1.0), 1, 5, "last", 4, (1, 2), 0.9, 0.2)
    evolution = EvolutionOptions(population=5, generations=6, parents=2, mutations=3, mutation_prob=0.3, crossovers=4)
    assert evolution_arguments(evolution) == {"population": 5, "generations": 6, "parents": 2, "mutations": 3,
                                              "gene_prob": 0.3, "crossovers": 4}
