"""bench/search_study.py: its curves and summaries on made-up searches, and one tiny study end to end."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from support import ROOT, load_script, subprocess_env

SCRIPT = os.path.join(ROOT, "bench", "search_study.py")


study = load_script(SCRIPT, "bench_search_study")


def entry(init, seed, best, evaluations, budget=5.0, val=0.5):
    return {
        "metric": "flops", "budget": budget, "init": init, "seed": seed, "config": {"resolution": 24},
        "value": budget - 0.1, "search_top1": best[-1], "val_top1": val, "evaluations": evaluations[-1],
        "generations": len(best), "best_per_generation": best, "evaluations_per_generation": evaluations,
        "fitness_data": "holdout", "fitness_examples": 100, "calibration_batches": 2, "alpha": 0.8,
    }


def test_curves_hold_values_between_generations_and_after_the_end():
    a = entry("uniform", 0, [0.5, 0.6, 0.7], [4, 8, 12])
    b = entry("uniform", 1, [0.4, 0.8], [6, 10])
    assert study.step_value(a, 3) is None
    assert study.step_value(a, 4) == 0.5 and study.step_value(a, 11) == 0.6 and study.step_value(a, 99) == 0.7
    c = study.curve([a, b])
    # Defined from 6 (both seeds have a first generation) at every boundary of either seed.
    assert c["evaluations"] == [6, 8, 10, 12]
    assert c["mean"] == pytest.approx([0.45, 0.5, 0.7, 0.75])
    assert c["min"] == pytest.approx([0.4, 0.4, 0.6, 0.7]) and c["max"] == pytest.approx([0.5, 0.6, 0.8, 0.8])
    assert study.first_reach(c, 0.7) == 10
    assert study.first_reach(c, 0.76) is None


def test_summary_counts_the_evaluations_the_prior_needs():
    found = {
        (5.0, "uniform"): {0: entry("uniform", 0, [0.5, 0.6, 0.7], [4, 8, 12]),
                           1: entry("uniform", 1, [0.5, 0.7, 0.7], [4, 8, 12])},
        (5.0, "prior"): {0: entry("prior", 0, [0.7, 0.72, 0.72], [4, 8, 12]),
                         1: entry("prior", 1, [0.6, 0.7, 0.75], [4, 8, 12])},
        (8.0, "uniform"): {0: entry("uniform", 0, [0.8], [4], budget=8.0)},
        (8.0, "prior"): {0: entry("prior", 0, [0.7], [4], budget=8.0)},
    }
    summary = study.summarise(found)
    five = summary["5"]
    assert list(five["inits"]) == ["uniform", "prior"]
    assert five["uniform_final_mean_best"] == pytest.approx(0.7)
    assert five["inits"]["uniform"]["final_best"] == [0.7, 0.7]
    assert five["inits"]["prior"]["mean_final_best"] == pytest.approx(0.735)
    assert five["uniform_evaluations_to_reach_its_final_mean"] == 12
    assert five["prior_evaluations_to_reach_uniform_final_mean"] == 8
    assert five["evaluations_saved_by_prior"] == 4
    assert summary["8"]["prior_evaluations_to_reach_uniform_final_mean"] is None
    assert summary["8"]["evaluations_saved_by_prior"] is None


def test_searched_subnets_against_the_winner_of_the_nearest_target_below():
    winners = [
        {"metric": "flops", "target": 4.0, "config": {}, "value": 4.3, "val_top1": 0.6},
        {"metric": "flops", "target": 6.0, "config": {}, "value": 6.2, "val_top1": 0.7},
    ]
    assert study.nearest_winner(winners, 5.0)["target"] == 4.0
    assert study.nearest_winner(winners, 6.0)["target"] == 6.0
    assert study.nearest_winner(winners, 3.0) is None
    found = {
        (5.0, "prior"): {0: entry("prior", 0, [0.7], [4], val=0.65)},
        (6.1, "prior"): {1: entry("prior", 1, [0.7], [4], budget=6.1)},  # No seed 0.
        (3.0, "prior"): {0: entry("prior", 0, [0.7], [4], budget=3.0)},
    }
    rows = study.comparison(found, winners)
    assert [r["budget"] for r in rows] == [3.0, 5.0, 6.1]
    assert rows[0]["winner"] is None and "val_top1_gain" not in rows[0]
    assert rows[1]["val_top1_gain"] == pytest.approx(0.05) and rows[1]["winner"]["fits_budget"]
    assert rows[2]["searched"] is None and rows[2]["winner"]["fits_budget"] is False
    table = study.markdown(rows, "M MACs", 0, "prior")
    assert "| 5 | 4.90 | 70.00 | 65.00 | 4 | 4.30 | 60.00 | +5.00 |" in table
    assert "6.20 (over)" in table and "none below" in table


@pytest.mark.slow
def test_a_tiny_study_end_to_end(smoke_job, tmp_path):
    job = tmp_path / "run"
    shutil.copytree(smoke_job, job, ignore=shutil.ignore_patterns("tensorboard", "search*"))
    run_json = json.loads((job / "run.json").read_text())
    run_json["data"]["holdout_examples"] = 32  # Scored on 32 training examples: enough to exercise the paths.
    (job / "run.json").write_text(json.dumps(run_json))
    assert (job / "records.json").exists()
    command = [
        sys.executable, SCRIPT, "run", f"--job_dir={job}", "--budgets=6,9", "--seeds=0,1", "--population=3",
        "--generations=2", "--parents=2", "--mutations=1", "--crossovers=1", "--fitness_examples=32",
        "--calibration_batches=1", "--noprogress",
    ]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    for seed in (0, 1):
        searched = json.loads((job / "search_study" / f"seed{seed}" / "searched.json").read_text())
        assert {(e["budget"], e["init"]) for e in searched} == {
            (b, i) for b in (6.0, 9.0) for i in ("uniform", "conditional", "prior")
        }
        assert all(e["seed"] == seed for e in searched)
        record = json.loads((job / "search_study" / f"seed{seed}" / "study_run.json").read_text())
        assert record["search_evaluations"] == sum(e["evaluations"] for e in searched)
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert again.returncode == 0 and again.stdout.count("every search finished earlier") == 2
    changed = subprocess.run(command[:-1] + ["--population=4"], cwd=ROOT, capture_output=True, text=True,
                             env=subprocess_env(), timeout=600)
    assert changed.returncode != 0 and "--population: differs" in changed.stderr

    out, png = tmp_path / "study.json", tmp_path / "study.png"
    report = subprocess.run(
        [sys.executable, SCRIPT, "report", f"--job_dir={job}", f"--json={out}", f"--png={png}"],
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=600,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert set(summary["budgets"]) == {"6", "9"} and png.stat().st_size > 0
    assert summary["budgets"]["6"]["inits"]["prior"]["seeds"] == [0, 1]
    assert "prior_evaluations_to_reach_uniform_final_mean" in summary["budgets"]["9"]
    assert "| budget (M MACs) |" in report.stdout and "| 6 |" in report.stdout


def test_a_run_without_held_out_data_is_refused(tmp_path):
    job = tmp_path / "run"
    job.mkdir()
    from support import smoke_config

    (job / "run.json").write_text(json.dumps(smoke_config(str(job)).to_dict()))
    result = subprocess.run([sys.executable, SCRIPT, "run", f"--job_dir={job}", "--budgets=6"], cwd=ROOT,
                            capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode != 0 and "train the run with --holdout_examples" in result.stderr
