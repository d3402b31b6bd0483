"""TrainingRecords: the lowest losses kept, latest loss per config, exact persistence."""

import json
import math
import time

import numpy as np
import pytest

from pss_tf.run.records import Record, TrainingRecords
from pss_tf.space.config import SearchSpace, SubnetConfig

SPACE = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5)


def configs(n, seed=0):
    rng = np.random.default_rng(seed)
    resolutions, widths = SPACE.sample_arrays(rng, n)
    out = []
    for r, w in zip(resolutions, widths):
        config = SubnetConfig(SPACE.model, int(r), tuple(w.tolist()))
        if config not in out:
            out.append(config)
    return out


CONFIGS = configs(200)


def test_keeps_the_lowest_capacity_losses_and_counts_all():
    rng = np.random.default_rng(1)
    losses = rng.permutation(np.arange(100) / 10.0)
    records = TrainingRecords(capacity=10)
    kept = [records.add(CONFIGS[i], i, float(loss)) for i, loss in enumerate(losses)]
    assert records.count == 100 and len(records) == 10 and records.last_step == 99
    assert [r.loss for r in records.records()] == [i / 10.0 for i in range(10)]
    expected = {CONFIGS[i] for i, loss in enumerate(losses) if loss < 1.0}
    assert {r.config for r in records.records()} == expected
    assert records.worst_loss == 0.9
    # `add` says whether the record is kept now: the lowest ten always were.
    assert all(kept[i] for i, loss in enumerate(losses) if loss < 1.0)


def test_newcomer_that_ties_the_worst_stays_out():
    records = TrainingRecords(capacity=2)
    records.add(CONFIGS[0], 0, 1.0)
    records.add(CONFIGS[1], 1, 2.0)
    assert not records.add(CONFIGS[2], 2, 2.0)
    assert CONFIGS[2] not in records and CONFIGS[1] in records
    assert records.add(CONFIGS[3], 3, 1.5)
    assert [r.config for r in records.records()] == [CONFIGS[0], CONFIGS[3]]


def test_a_config_seen_again_keeps_its_latest_loss():
    records = TrainingRecords(capacity=3)
    for i in range(3):
        records.add(CONFIGS[i], i, 1.0 + i)
    # Lower then higher: the latest wins either way, and the count grows.
    records.add(CONFIGS[0], 10, 0.5)
    assert records.get(CONFIGS[0]) == Record(CONFIGS[0], 10, 0.5)
    records.add(CONFIGS[0], 11, 9.0)
    assert records.get(CONFIGS[0]) == Record(CONFIGS[0], 11, 9.0)
    assert len(records) == 3 and records.count == 5 and records.worst_loss == 9.0
    # Its worse latest loss makes it the first to go.
    assert records.add(CONFIGS[5], 12, 4.0)
    assert CONFIGS[0] not in records
    assert [r.loss for r in records.records()] == [2.0, 3.0, 4.0]
    # Evicted and seen again: a newcomer like any other.
    assert not records.add(CONFIGS[0], 13, 5.0)
    assert records.add(CONFIGS[0], 14, 2.5)
    assert [r.loss for r in records.records()] == [2.0, 2.5, 3.0]


def test_equal_losses_evict_the_most_recently_updated():
    records = TrainingRecords(capacity=3)
    records.add(CONFIGS[0], 0, 1.0)
    records.add(CONFIGS[1], 1, 1.0)
    records.add(CONFIGS[2], 2, 1.0)
    records.add(CONFIGS[0], 3, 1.0)  # Now the most recent of the three.
    records.add(CONFIGS[3], 4, 0.5)
    assert [r.config for r in records.records()] == [CONFIGS[3], CONFIGS[1], CONFIGS[2]]


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf, float("nan"), np.float32("nan"), "1.0", None, True])
def test_rejects_losses_that_are_not_finite_numbers(loss):
    records = TrainingRecords()
    with pytest.raises(ValueError, match=r"^loss: must be a finite number"):
        records.add(CONFIGS[0], 0, loss)
    assert records.count == 0 and len(records) == 0


def test_rejects_bad_step_config_and_capacity():
    records = TrainingRecords()
    with pytest.raises(ValueError, match=r"^step:"):
        records.add(CONFIGS[0], -1, 1.0)
    with pytest.raises(ValueError, match=r"^step:"):
        records.add(CONFIGS[0], 1.5, 1.0)
    with pytest.raises(ValueError, match=r"^config:"):
        records.add(CONFIGS[0].to_dict(), 0, 1.0)
    for capacity in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"^capacity:"):
            TrainingRecords(capacity)
    assert records.count == 0


def test_accepts_numpy_losses_and_steps():
    records = TrainingRecords()
    assert records.add(CONFIGS[0], np.int64(3), np.float32(0.25))
    assert records.get(CONFIGS[0]) == Record(CONFIGS[0], 3, 0.25)
    assert type(records.get(CONFIGS[0]).loss) is float and type(records.get(CONFIGS[0]).step) is int


def _filled(capacity=20, n=150, seed=2):
    rng = np.random.default_rng(seed)
    records = TrainingRecords(capacity)
    for step in range(n):
        config = CONFIGS[int(rng.integers(60))]  # Repeats: latest-loss updates happen.
        records.add(config, step, float(rng.normal(1.0, 0.3)))
    return records, rng


def test_round_trip_is_exact_and_behaves_identically():
    records, rng = _filled()
    data = records.to_dict()
    assert data["format"] == "pss_tf.search.records" and data["version"] == 1
    assert data["capacity"] == 20 and data["count"] == 150 and data["last_step"] == 149
    assert len(data["entries"]) == 20
    text = json.dumps(data)
    restored = TrainingRecords.from_dict(json.loads(text))
    assert restored.to_dict() == data
    assert json.dumps(restored.to_dict()) == text
    assert restored.records() == records.records()
    # Both continue identically, ties and lazy heap entries included.
    for step in range(150, 400):
        config = CONFIGS[int(rng.integers(60))]
        loss = float(np.round(rng.normal(1.0, 0.3), 1))  # Rounded: many ties.
        assert records.add(config, step, loss) == restored.add(config, step, loss)
    assert restored.to_dict() == records.to_dict()


def test_save_and_load(tmp_path):
    records, _ = _filled()
    path = tmp_path / "run" / "records.json"
    records.save(path)
    assert TrainingRecords.load(path).to_dict() == records.to_dict()
    assert not [p for p in path.parent.iterdir() if p.name != "records.json"]  # No temporary files left.
    # A failed save leaves the old file.
    records.add(CONFIGS[0], 1000, 0.0)
    records._entries[CONFIGS[0]] = (object(), 1000, 10_000)  # Unserialisable.
    with pytest.raises(TypeError):
        records.save(path)
    assert TrainingRecords.load(path).count == 150


def test_load_errors_name_the_file_and_the_field(tmp_path):
    path = tmp_path / "records.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="records file .*records.json: not valid JSON"):
        TrainingRecords.load(path)
    records, _ = _filled()
    data = records.to_dict()
    path.write_text(json.dumps({**data, "version": 2}))
    with pytest.raises(ValueError, match=r"records.json: not a version 1 pss_tf.search.records file"):
        TrainingRecords.load(path)
    bad = json.loads(json.dumps(data))
    bad["entries"][3]["loss"] = None
    with pytest.raises(ValueError, match=r"entries\[3\]: loss: must be a finite number"):
        TrainingRecords.from_dict(bad)
    bad = json.loads(json.dumps(data))
    bad["entries"][4] = bad["entries"][2]
    with pytest.raises(ValueError, match=r"entries\[4\]: .* appears twice"):
        TrainingRecords.from_dict(bad)
    with pytest.raises(ValueError, match=r"entries: expected a list of at most 5"):
        TrainingRecords.from_dict({**data, "capacity": 5})
    with pytest.raises(ValueError, match=r"count: must be an int of at least 20"):
        TrainingRecords.from_dict({**data, "count": 3})
    with pytest.raises(ValueError, match=r"is after last_step 10"):
        TrainingRecords.from_dict({**data, "last_step": 10})


def test_add_is_cheap():
    records = TrainingRecords(capacity=100)
    rng = np.random.default_rng(3)
    losses = rng.random(20_000).tolist()
    started = time.perf_counter()
    for step, loss in enumerate(losses):
        records.add(CONFIGS[step % len(CONFIGS)], step, loss)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{elapsed / len(losses) * 1e6:.1f} us per add"
    # The lazy heap stays bounded.
    assert len(records._heap) <= 2 * records.capacity + 64
    # And the content is right: the lowest latest loss of each config.
    latest = {}
    for step, loss in enumerate(losses):
        latest[CONFIGS[step % len(CONFIGS)]] = loss
    # Which configs survive depends on the order of events, but every kept
    # config holds its latest loss.
    assert all(r.loss == latest[r.config] for r in records.records())
