"""Every training mode replays the steps recorded before modes became objects.

`tests/fixtures/mode_replay.json` was written by `tests/mode_replay.py` with the
trainer of before issue 19. On the processor it was recorded on, losses, pools,
records and weights must match bit for bit; float results of another processor
(other vector units, other oneDNN kernels) may differ in the last bits, so
there the subnets drawn must still match exactly and the numbers to 1e-4.
"""

import json

import numpy as np
import pytest
from mode_replay import FIXTURE, MODES, cpu, replay

with open(FIXTURE) as f:
    RECORDED = json.load(f)


def _numbers(tree):
    """The floats of a JSON tree, in order, and the tree with them blanked."""
    if isinstance(tree, dict):
        pairs = [_numbers(tree[k]) for k in sorted(tree)]
        return [x for n, _ in pairs for x in n], {k: s for k, (_, s) in zip(sorted(tree), pairs)}
    if isinstance(tree, list):
        pairs = [_numbers(v) for v in tree]
        return [x for n, _ in pairs for x in n], [s for _, s in pairs]
    if isinstance(tree, float):
        return [tree], "float"
    return [], tree


def test_the_fixture_covers_every_mode():
    assert sorted(RECORDED["modes"]) == sorted(MODES)


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_mode_replays_the_recorded_steps(mode):
    expected = RECORDED["modes"][mode]
    actual = json.loads(json.dumps(replay(mode)))
    if cpu() == RECORDED["cpu"]:
        assert actual == expected
        return
    for part in ("losses", "pools", "records", "weights", "optimizer"):
        numbers, shape = _numbers(actual[part])
        expected_numbers, expected_shape = _numbers(expected[part])
        if part not in ("weights", "optimizer"):
            assert shape == expected_shape, part  # The same subnets, pools and loss names.
        np.testing.assert_allclose(numbers, expected_numbers, rtol=1e-4, atol=1e-6, err_msg=part)
