"""tools/search.py end to end on the smoke run: results, plots, Ctrl-C and an exact resume."""

import json
import os
import signal
import time

import pytest
from support import run_tool, start_tool

from pss_tf import SubnetConfig
from pss_tf.search import driver
from pss_tf.search.options import SearchOptions
from pss_tf.space.cost import param_counts

BUDGETS = (7.0, 10.0)
INIT = ("prior", "conditional")
ALPHA = 0.8
GENERATIONS = 3
FLAGS = (
    "--budgets=7,10", "--init=prior,conditional", "--population=5", f"--generations={GENERATIONS}",
    "--parents=2", "--mutations=3", "--crossovers=2", "--seed=3", "--fitness_examples=48", "--noprogress",
)
FIELDS = {
    "name", "metric", "budget", "alpha", "init", "seed", "config", "value", "flops", "params", "search_top1",
    "val_top1", "val_top5", "fitness_data", "fitness_examples", "calibration_batches", "evaluations", "generations",
    "seeds", "best_per_generation", "mean_per_generation", "evaluations_per_generation",
}


def search(job, *extra):
    result = run_tool("search.py", f"--job_dir={job}", *FLAGS, *extra, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def read(job, name="searched.json"):
    with open(os.path.join(job, "search", name)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def searched(job_copy):
    """An uninterrupted search of a copy of the smoke run: its directory and searched.json."""
    job = job_copy()
    result = search(job)
    return job, read(job), result.stdout


@pytest.mark.slow
def test_search_writes_every_result(searched):
    job, entries, stdout = searched
    # Sorted by metric, budget, then init in the order uniform, conditional, prior.
    assert [(e["budget"], e["init"]) for e in entries] == [(b, i) for b in BUDGETS for i in ("conditional", "prior")]
    for entry in entries:
        assert set(entry) == FIELDS
        budget = entry["budget"]
        assert entry["metric"] == "flops" and entry["alpha"] == ALPHA and entry["seed"] == 3
        assert ALPHA * budget <= entry["value"] <= budget
        assert entry["flops"] == entry["value"]
        assert entry["params"] == param_counts(SubnetConfig.from_dict(entry["config"]), num_classes=4, small_input=True)
        assert 0.0 <= entry["search_top1"] <= 1.0 and 0.0 <= entry["val_top1"] <= entry["val_top5"] <= 1.0
        assert entry["fitness_data"] == "train_subset" and entry["fitness_examples"] == 48
        assert entry["generations"] == GENERATIONS
        best = entry["best_per_generation"]
        assert len(best) == len(entry["mean_per_generation"]) == GENERATIONS
        assert best == sorted(best) and best[-1] == entry["search_top1"]  # Parents are kept: never worse.
        assert all(m <= b for m, b in zip(entry["mean_per_generation"], best))
        assert entry["evaluations"] == entry["evaluations_per_generation"][-1] >= 5
        assert entry["name"] == f"searched_flops_{budget:g}m_{entry['init']}"
    for name in ("fitness_flops.png", "pareto_flops.png"):
        with open(os.path.join(job, "search", name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for budget in BUDGETS:
        for init in INIT:
            state = read(job, f"state_flops_{budget:g}_{init}.json")
            assert state["search"]["generation"] == GENERATIONS and state["result"]["val_top1"] >= 0
    assert "training (the run kept no held-out data)" in stdout


@pytest.mark.slow
def test_finished_searches_are_not_redone_and_new_ones_join_the_results(searched):
    job, entries, _ = searched
    again = search(job)
    assert "restoring" not in again.stdout  # Every state is finished: no supernet, no evaluation.
    assert read(job) == entries
    # A later command's results join those of earlier ones (here written directly, without a search).
    later = driver.plan(SearchOptions(job_dir=job, budgets=(7.0,), init=("uniform",)))
    newcomer = dict(entries[0], init="uniform", name="searched_flops_7m_uniform")
    driver.write_results(later, [newcomer])
    merged = read(job)
    assert [(e["budget"], e["init"]) for e in merged] == [
        (7.0, "uniform"), (7.0, "conditional"), (7.0, "prior"), (10.0, "conditional"), (10.0, "prior")
    ]
    assert merged[0] == newcomer and merged[1:] == entries


@pytest.mark.slow
def test_interrupted_search_resumes_to_the_same_results(searched, job_copy):
    _, reference, _ = searched
    job = job_copy()
    first_state = os.path.join(job, "search", f"state_flops_{BUDGETS[0]:g}_{INIT[0]}.json")
    process = start_tool("search.py", f"--job_dir={job}", *FLAGS)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(first_state) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.path.exists(first_state), "the first generation was never saved"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert "stopped; continue with the same command" in stdout
    assert not os.path.exists(os.path.join(job, "search", "searched.json"))  # Results only when all finished.
    with open(first_state) as f:
        assert 1 <= json.load(f)["search"]["generation"] < GENERATIONS
    search(job)
    assert read(job) == reference


@pytest.mark.slow
def test_searched_subnets_export_beside_the_winners(searched, tmp_path):
    """`tools/export.py --searched` exports every searched subnet as a signature (and
    TFLite file) beside the winners; the adaptive signature chooses among all of them."""
    import tensorflow as tf

    job, entries, _ = searched
    out = tmp_path / "export"
    result = run_tool(
        "export.py", f"--job_dir={job}", f"--export_dir={out}", "--searched", "--tflite_kinds=float32",
        "--nobundle", "--nolatency", "--eval_examples=64", timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    manifest = json.load(open(out / "manifest.json"))
    by_name = {s["name"]: s for s in manifest["subnets"]}
    assert {e["name"] for e in entries} <= set(by_name)
    assert {s["source"] for s in manifest["subnets"]} == {"winner", "searched"}
    for entry in entries:
        subnet = by_name[entry["name"]]
        assert subnet["config"] == entry["config"] and subnet["val_top1"] == entry["val_top1"]
        assert subnet["tflite"]["float32"]["bytes"] > 0
    choices = manifest["saved_model"]["signatures"]["adaptive"]["choices"]
    front = [s for s in manifest["subnets"] if s["pareto_front"]["flops"]]
    assert [c["subnet"] for c in choices] == [s["name"] for s in front]
    for subnet in manifest["subnets"]:  # Off the front: a cheaper subnet is at least as accurate.
        if not subnet["pareto_front"]["flops"]:
            assert any(
                f["values"]["flops"] <= subnet["values"]["flops"] and f["val_top1"] >= subnet["val_top1"] for f in front
            ), subnet["name"]
    loaded = tf.saved_model.load(str(out / "serving" / "pss_mobilenet_v1" / "1"))
    assert {e["name"] for e in entries} <= set(loaded.signatures)


def test_export_of_searched_subnets_needs_a_search(job_copy, tmp_path):
    from pss_tf.errors import ConfigError
    from pss_tf.export import exporter
    from pss_tf.export.options import ExportOptions

    job = job_copy()
    with pytest.raises(ConfigError) as raised:
        exporter.plan(ExportOptions(job_dir=job, export_dir=str(tmp_path / "out")).replace(searched=True))
    assert raised.value.field == "searched" and "tools/search.py" in str(raised.value)
    assert not (tmp_path / "out").exists()
