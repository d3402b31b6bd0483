"""Exponential schedules of p_e and t_e."""

import json

import pytest

from pss_tf.sampling.schedules import ExponentialSchedule


def test_release_schedule_values():
    schedule = ExponentialSchedule(1.0, 0.01, 250)
    assert schedule(0) == 1.0
    assert schedule(125) == pytest.approx(0.1, rel=1e-12)
    assert schedule(250) == 0.01
    assert schedule(62.5) == pytest.approx(0.01**0.25, rel=1e-12)
    assert schedule(25) == pytest.approx(10 ** (-0.2), rel=1e-12)


def test_fractional_epochs_decrease_monotonically():
    schedule = ExponentialSchedule(1.0, 0.01, 10)
    values = [schedule(step / 100) for step in range(1001)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_end_is_exact_and_held_after_the_last_epoch():
    schedule = ExponentialSchedule(0.3, 0.7, 3)
    assert schedule(3) == 0.7
    assert schedule(30) == 0.7
    assert schedule(0) == 0.3
    assert schedule(1.5) == pytest.approx((0.3 * 0.7) ** 0.5, rel=1e-12)  # Geometric mean.


def test_constant_schedule():
    schedule = ExponentialSchedule(0.5, 0.5, 100)
    assert {schedule(e) for e in range(0, 120, 7)} == {0.5}


def test_returns_python_floats():
    assert type(ExponentialSchedule(1, 0.01, 250)(100)) is float


@pytest.mark.parametrize("field", ["start", "end", "total_epochs"])
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1", None])
def test_validation_names_the_field(field, bad):
    values = {"start": 1.0, "end": 0.01, "total_epochs": 250}
    with pytest.raises(ValueError, match=field):
        ExponentialSchedule(**{**values, field: bad})


@pytest.mark.parametrize("epoch", [-1, float("nan"), "3", None])
def test_bad_epoch(epoch):
    with pytest.raises(ValueError, match="epoch"):
        ExponentialSchedule(1.0, 0.01, 250)(epoch)


def test_json_round_trip():
    schedule = ExponentialSchedule(1.0, 0.01, 250)
    assert ExponentialSchedule.from_dict(json.loads(json.dumps(schedule.to_dict()))) == schedule
