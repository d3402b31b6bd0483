"""bench/finetune_study.py and bench/transfer_study.py: their gains, differences and tables."""

import os

import pytest
from support import ROOT, load_script

finetune_study = load_script(os.path.join(ROOT, "bench", "finetune_study.py"), "finetune_study")
transfer_study = load_script(os.path.join(ROOT, "bench", "transfer_study.py"), "transfer_study")
pruning_study = load_script(os.path.join(ROOT, "bench", "pruning_study.py"), "pruning_study")


def entry(name, before, after, seconds):
    return {"name": name, "val_top1_before": before, "val_top1_after": after, "wall_seconds": seconds}


def test_finetune_study_gains_and_their_standard_error():
    rows = {
        "inherited_e1": [entry("a", 0.80, 0.82, 60), entry("b", 0.85, 0.86, 120)],
        "scratch_e1": [entry("a", 0.80, 0.70, 60), entry("b", 0.85, 0.75, 60)],
    }
    summary = finetune_study.summarise(rows)
    assert summary["inherited_e1"]["mean_gain"] == pytest.approx(1.5)
    assert summary["inherited_e1"]["se_gain"] == pytest.approx(0.5)  # stdev(2, 1) / sqrt(2)
    assert summary["inherited_e1"]["mean_minutes"] == pytest.approx(1.5)
    assert summary["scratch_e1"]["mean_gain"] == pytest.approx(-10.0) and summary["scratch_e1"]["se_gain"] == pytest.approx(0, abs=1e-9)
    table = finetune_study.markdown(rows, summary)
    assert "| a | 80.00 | 82.00 | 70.00 |" in table and "+1.50 ± 0.50" in table


def test_a_setting_counts_as_finished_when_every_winner_is_fine_tuned(tmp_path):
    import json

    from pss_tf import SubnetConfig
    from pss_tf.run.config import TrainConfig
    from pss_tf.run.job import JobDir

    job = tmp_path / "run"
    job.mkdir()
    JobDir(str(job)).write_run_config(TrainConfig(job_dir=str(job)))
    config = SubnetConfig.uniform("mobilenet_v1", 224, 1.0).to_dict()
    winner = {"metric": "flops", "target": 300.0, "config": config, "value": 300.0, "score": 0.0, "val_top1": 0.7,
              "pareto": True}
    (job / "winners.json").write_text(json.dumps([{**winner, "name": "b"}, {**winner, "name": "a"}]))
    for key, names in {"inherited_e1": ["a", "b"], "distill_e1": ["a"]}.items():
        (tmp_path / key).mkdir()
        entries = [{**entry(n, 0.8, 0.81, 60), "config": config, "mode": "inherited", "weights": f"{n}/weights.npz"}
                   for n in names]
        (tmp_path / key / "finetuned.json").write_text(json.dumps(entries))
    rows = finetune_study.finished_settings(str(job), str(tmp_path), ["inherited_e1", "distill_e1", "scratch_e1"])
    assert list(rows) == ["inherited_e1"] and [e["name"] for e in rows["inherited_e1"]] == ["b", "a"]


def test_transfer_study_differences_per_subnet():
    results = {
        0: {"warm": {"flops_2m": 90.0, "max net": 93.0}, "scratch": {"flops_2m": 88.0, "max net": 92.0}},
        1: {"warm": {"flops_2m": 91.0, "max net": 92.0}, "scratch": {"flops_2m": 88.0, "max net": 92.0}},
    }
    rows, table = transfer_study.report(results)
    by_name = {r["name"]: r for r in rows}
    assert by_name["flops_2m"]["difference"] == pytest.approx(2.5) and by_name["flops_2m"]["se"] == pytest.approx(0.5)
    assert by_name["max net"]["difference"] == pytest.approx(0.5)
    assert "| flops_2m | 88.00 | 90.50 | +2.50 ± 0.50 |" in table


def test_the_pruning_study_reads_a_finished_search_through_the_runs_reader(tmp_path):
    import json

    entries = [{"name": "searched_flops_2m_prior", "value": 1.98}]
    (tmp_path / "searched.json").write_text(json.dumps(entries))
    assert pruning_study.search("unused", str(tmp_path), [2.0], None) == entries  # No search runs.
    (tmp_path / "searched.json").write_text("{}")
    with pytest.raises(ValueError, match="searched.json: expected a list of entries"):
        pruning_study.search("unused", str(tmp_path), [2.0], None)
