"""Every training mode replays the steps recorded before modes became objects.

`tests/fixtures/mode_replay.json` was written by `tests/mode_replay.py` with the
trainer of before issue 19. On the processor it was recorded on, with the kernels it was recorded with,
losses, pools, records and weights must match bit for bit. Elsewhere (other
vector units, Eigen's kernels or oneDNN held to AVX2) float sums round
differently, and the smoke steps amplify last-bit differences: on the recording
host held to AVX2, the first step's losses agreed to 1e-5 and the third step's
were 1-2% apart, with Eigen as with oneDNN. So there only what those steps cannot
amplify is compared: the first step's losses (same weights, same batch, so the
same subnets drawn) to 1e-4, and which losses every step computes. (Which
records later steps keep depends on their scores, so records are not compared.)
"""

import json

import numpy as np
import pytest
from mode_replay import FIXTURE, MODES, cpu, replay

with open(FIXTURE) as f:
    RECORDED = json.load(f)


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
    assert [sorted(step) for step in actual["losses"]] == [sorted(step) for step in expected["losses"]]
    assert np.all(np.isfinite([value for step in actual["losses"] for value in step.values()]))
    first, recorded_first = actual["losses"][0], expected["losses"][0]
    np.testing.assert_allclose([first[k] for k in sorted(first)], [recorded_first[k] for k in sorted(first)],
                               rtol=1e-4, atol=1e-6)
