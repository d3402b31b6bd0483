"""Target grids (and the FLOPs metric that feeds them)."""

import math

import numpy as np
import pytest

from pss_tf.space import architectures
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.cost import count_flops
from pss_tf.space.metrics import FlopsMetric, Metric
from pss_tf.space.targets import TargetGrid

MBV1_GRID = TargetGrid(110, 570, 10)
MBV2_GRID = TargetGrid(60, 300, 10)


class TestValidation:
    def test_step_must_be_positive(self):
        with pytest.raises(ValueError, match="step"):
            TargetGrid(110, 570, 0)
        with pytest.raises(ValueError, match="step"):
            TargetGrid(110, 570, -10)

    def test_start_must_not_exceed_stop(self):
        with pytest.raises(ValueError, match="start"):
            TargetGrid(570, 110, 10)

    @pytest.mark.parametrize("field", ["start", "stop", "step"])
    def test_fields_must_be_finite_numbers(self, field):
        values = {"start": 110, "stop": 570, "step": 10}
        for bad in (float("nan"), float("inf"), "10", True):
            with pytest.raises(ValueError, match=field):
                TargetGrid(**{**values, field: bad})

    def test_single_target_grid(self):
        grid = TargetGrid(300, 300, 10)
        assert grid.targets == (300.0,)
        assert grid.snap(304.9) == 300.0
        assert grid.snap(305.1) is None

    def test_frozen_and_hashable(self):
        assert TargetGrid(110, 570, 10) == TargetGrid(110.0, 570.0, 10.0)
        assert hash(TargetGrid(110, 570, 10)) == hash(TargetGrid(110.0, 570.0, 10.0))
        with pytest.raises(AttributeError):
            MBV1_GRID.step = 5


class TestTargets:
    def test_paper_grids(self):
        assert len(MBV1_GRID.targets) == 47
        assert MBV1_GRID.targets[:3] == (110.0, 120.0, 130.0)
        assert MBV1_GRID.targets[-1] == 570.0
        assert len(MBV2_GRID.targets) == 25
        assert MBV2_GRID.targets[0] == 60.0 and MBV2_GRID.targets[-1] == 300.0

    def test_stop_off_the_grid_is_not_a_target(self):
        assert TargetGrid(110, 575, 10).targets[-1] == 570.0

    def test_fractional_step_gives_clean_floats(self):
        grid = TargetGrid(0.3, 2.0, 0.1)
        assert len(grid.targets) == 18
        assert grid.targets[:3] == (0.3, 0.4, 0.5)
        assert grid.targets[-1] == 2.0
        assert all(repr(t) == f"{t:.1f}" for t in grid.targets)

    def test_contains(self):
        assert 300 in MBV1_GRID and 300.0 in MBV1_GRID
        assert 305 not in MBV1_GRID
        assert 580 not in MBV1_GRID
        assert "300" not in MBV1_GRID

    def test_dict_round_trip(self):
        assert TargetGrid.from_dict(MBV1_GRID.to_dict()) == MBV1_GRID


class TestSnap:
    def test_mobilenet_v1_extremes(self):
        assert MBV1_GRID.snap(568.79) == 570.0
        assert MBV1_GRID.snap(106.78) == 110.0
        assert MBV1_GRID.snap(76.54) is None  # 0.5 @ 160 lies below the grid.

    def test_snaps_real_flops(self):
        max_v1 = count_flops(SubnetConfig.uniform("mobilenet_v1", 224, 1.0))
        min_v1 = count_flops(SubnetConfig.uniform("mobilenet_v1", 128, 0.75))
        assert max_v1 == pytest.approx(568.79, abs=0.01)
        assert min_v1 == pytest.approx(106.78, abs=0.01)
        assert MBV1_GRID.snap(max_v1) == 570.0
        assert MBV1_GRID.snap(min_v1) == 110.0
        assert MBV2_GRID.snap(count_flops(SubnetConfig.uniform("mobilenet_v2", 224, 1.0))) == 300.0
        assert MBV2_GRID.snap(count_flops(SubnetConfig.uniform("mobilenet_v2", 128, 0.75))) == 70.0

    def test_outside_the_grid(self):
        assert MBV1_GRID.snap(104.9) is None  # Rounds to 100.
        assert MBV1_GRID.snap(575.1) is None  # Rounds to 580.
        assert MBV1_GRID.snap(574.9) == 570.0
        assert MBV1_GRID.snap(105.1) == 110.0
        assert MBV1_GRID.snap(float("nan")) is None
        assert MBV1_GRID.snap(float("inf")) is None
        assert MBV1_GRID.snap(-float("inf")) is None

    def test_offset_grid(self):
        grid = TargetGrid(105, 565, 10)
        assert grid.offset == 5.0
        assert grid.snap(109.99) == 105.0
        assert grid.snap(110.01) == 115.0
        assert grid.snap(100.01) == 105.0
        assert grid.snap(99.99) is None  # Rounds to 95.
        assert grid.snap(568.79) == 565.0
        assert grid.snap(570.01) is None  # Rounds to 575.

    def test_offset_of_fractional_grid(self):
        # 0.3 % 0.1 is 0.0999... in binary floats: that is no offset at all.
        grid = TargetGrid(0.3, 2.0, 0.1)
        assert grid.offset == 0.0
        assert grid.snap(1.0999999) == 1.1
        assert grid.snap(1.14) == 1.1
        assert grid.snap(0.26) == 0.3
        assert grid.snap(0.24) is None

    def test_no_float_noise(self):
        grid = TargetGrid(0.5, 20, 0.25)
        values = np.random.default_rng(0).uniform(0.4, 20.1, 1000)
        for value in values:
            target = grid.snap(value)
            if target is not None:
                assert target in grid.targets
                assert repr(target) == repr(round(target, 2))

    def test_ties_round_half_to_even(self):
        grid = TargetGrid(0, 100, 10)
        assert grid.snap(15.0) == 20.0
        assert grid.snap(25.0) == 20.0
        assert grid.snap_array([15.0, 25.0]).tolist() == [20.0, 20.0]

    def test_returns_the_canonical_target_objects(self):
        # Targets key pools and caches: snapping must give the very values of `targets`.
        values = np.random.default_rng(1).uniform(100, 580, 2000)
        for value in values:
            target = MBV1_GRID.snap(value)
            if target is not None:
                assert target == MBV1_GRID.targets[MBV1_GRID.index(value)]


class TestSnapArray:
    @pytest.mark.parametrize("grid", [MBV1_GRID, MBV2_GRID, TargetGrid(105, 565, 10), TargetGrid(0.3, 2.0, 0.1)])
    def test_matches_scalar_snap(self, grid):
        rng = np.random.default_rng(0)
        low, high = grid.start - 3 * grid.step, grid.stop + 3 * grid.step
        values = np.concatenate([rng.uniform(low, high, 5000), [np.nan, np.inf, -np.inf]])
        snapped = grid.snap_array(values)
        indices = grid.index_array(values)
        assert snapped.dtype == np.float64 and indices.dtype == np.int64
        for value, target, index in zip(values, snapped, indices):
            expected = grid.snap(value)
            if expected is None:
                assert math.isnan(target) and index == -1
            else:
                assert target == expected and grid.targets[index] == expected

    def test_examples(self):
        out = MBV1_GRID.snap_array([568.79, 106.78, 104.9, 575.1, 300.84])
        assert out[[0, 1, 4]].tolist() == [570.0, 110.0, 300.0]
        assert np.isnan(out[2]) and np.isnan(out[3])


class TestSpanning:
    """`TargetGrid.spanning`: about N round targets from a low value to a high one."""

    def test_the_smoke_spaces(self):
        # MobileNetV1 and MobileNetV3-Small at 24..32 px, widths 0.35..0.5 (configs/smoke.flags).
        assert TargetGrid.spanning(4.024584, 12.166144, 5) == TargetGrid(4, 12, 2)
        # Steps 0.2, 0.25 and 0.5 give 7, 6 and 3 targets: 6 is nearest 5.
        assert TargetGrid.spanning(0.849104, 1.914112, 5) == TargetGrid(0.75, 2, 0.25)
        assert TargetGrid.spanning(0.849104, 1.914112, 3) == TargetGrid(1, 2, 0.5)
        assert TargetGrid.spanning(110, 570, 47) == MBV1_GRID

    def test_the_ends_round_to_the_first_and_last_target_and_steps_are_round(self):
        rng = np.random.default_rng(0)
        for _ in range(300):
            low = 10 ** rng.uniform(-3, 4)
            high = low * 10 ** rng.uniform(0, 2)
            count = int(rng.integers(2, 60))
            grid = TargetGrid.spanning(low, high, count)
            assert grid.snap(high) == grid.stop
            assert grid.snap(low) == grid.start or (grid.start == grid.step and round(low / grid.step) == 0)
            mantissa = grid.step / 10 ** math.floor(math.log10(grid.step) + 1e-12)
            assert round(mantissa, 9) in (1, 2, 2.5, 5)
            assert abs(len(grid.targets) - count) <= max(2, count // 2)

    def test_no_target_is_zero(self):
        grid = TargetGrid.spanning(0.01, 10, 5)
        assert grid == TargetGrid(2, 10, 2) and grid.snap(0.01) is None

    def test_one_value(self):
        assert TargetGrid.spanning(1.3, 1.3, 4).targets == (1.0,)

    def test_validation(self):
        with pytest.raises(ValueError, match="count"):
            TargetGrid.spanning(1, 2, 0)
        with pytest.raises(ValueError, match="low, high"):
            TargetGrid.spanning(2, 1, 5)
        with pytest.raises(ValueError, match="low, high"):
            TargetGrid.spanning(1, float("inf"), 5)


class TestFlopsMetric:
    def test_value_and_target(self):
        metric = FlopsMetric("mobilenet_v1", MBV1_GRID)
        config = SubnetConfig.uniform("mobilenet_v1", 224, 1.0)
        assert metric.name == "flops"
        assert metric.value(config) == count_flops(config)
        assert metric.target(config) == 570.0

    def test_values_match_value(self):
        for model, grid in (("mobilenet_v1", MBV1_GRID), ("mobilenet_v2", MBV2_GRID)):
            metric = FlopsMetric(model, grid)
            rng = np.random.default_rng(0)
            stages = architectures.get_architecture(model).num_stages
            resolutions = rng.choice(np.arange(128, 225, 8), 50)
            widths = np.round(rng.uniform(0.75, 1.0, (50, stages)), 3)
            batch = metric.values(resolutions, widths)
            single = [metric.value(SubnetConfig(model, int(r), tuple(w))) for r, w in zip(resolutions, widths)]
            assert batch.tolist() == single
            # The generic per-config fallback of the base class agrees too.
            assert Metric.values(metric, resolutions, widths).tolist() == single

    def test_options_change_the_value(self):
        config = SubnetConfig.uniform("mobilenet_v1", 32, 1.0)
        base = FlopsMetric("mobilenet_v1", MBV1_GRID)
        assert FlopsMetric("mobilenet_v1", MBV1_GRID, num_classes=10).value(config) < base.value(config)
        assert FlopsMetric("mobilenet_v1", MBV1_GRID, small_input=True).value(config) > base.value(config)
        assert FlopsMetric("mobilenet_v1", MBV1_GRID, in_channels=1).value(config) < base.value(config)

    def test_to_dict_describes_everything(self):
        metric = FlopsMetric("mobilenet_v2", MBV2_GRID, num_classes=10, small_input=True, in_channels=1)
        assert metric.to_dict() == {
            "type": "FlopsMetric",
            "name": "flops",
            "model": "mobilenet_v2",
            "grid": {"start": 60.0, "stop": 300.0, "step": 10.0},
            "num_classes": 10,
            "small_input": True,
            "in_channels": 1,
        }

    def test_span_grid_runs_from_the_min_net_to_the_max_net(self):
        space = SearchSpace("mobilenet_v3_small", 24, 32, 4, 0.35, 0.5)
        metric = FlopsMetric("mobilenet_v3_small", num_classes=4, small_input=True)
        low, high = metric.value(space.min_config()), metric.value(space.max_config())
        assert (low, high) == (0.849104, 1.914112)
        grid = metric.span_grid(space, 5)
        assert grid == TargetGrid(0.75, 2, 0.25) and (grid.snap(low), grid.snap(high)) == (0.75, 2.0)

    def test_validation(self):
        with pytest.raises(ValueError, match="model"):
            FlopsMetric("resnet18", MBV1_GRID)
        with pytest.raises(ValueError, match="grid"):
            FlopsMetric("mobilenet_v1", (110, 570, 10))
        with pytest.raises(ValueError, match="num_classes"):
            FlopsMetric("mobilenet_v1", MBV1_GRID, num_classes=0)
        with pytest.raises(ValueError, match="in_channels"):
            FlopsMetric("mobilenet_v1", MBV1_GRID, in_channels=2.5)
        with pytest.raises(ValueError, match="config"):
            FlopsMetric("mobilenet_v1", MBV1_GRID).value(SubnetConfig.uniform("mobilenet_v2", 224, 1.0))
