"""PSE-Net's pipeline in its own setting, end to end through the tools (issue 20).

A layer-wise space (every channel group a gene, 20 width bins) is trained with
`--mode=pse`, searched with the prior, the found subnet is retrained from
scratch, and the export ships the retrained weights: the flow
`docs/PSE_PIPELINE.md`'s commands follow, at smoke size. The spaces: MobileNetV2
1.5x, ResNet-50 layer-wise, and ResNet-50 stage-wise (PSS's kind of space,
trained with PSS's sandwich rule and pools).
"""

import json

import pytest
from support import SMOKE_FLAGS, run_tool

from pss_tf.run import outputs
from pss_tf.run.job import Job
from pss_tf.space.config import SubnetConfig

# model: (flags of its space and mode, search budget in M MACs, genes, the sampler --sampler=auto picks)
SPACES = {
    "mobilenet_v2_layerwise_1.5x": (
        ("--min_width=0.1", "--max_width=0.3", "--flops_targets=2,6,2", "--mode=pse", "--parallel_subnets=2"),
        5, 25, "conditional",
    ),
    "resnet50_layerwise": (
        ("--min_width=0.05", "--max_width=0.15", "--flops_targets=6,30,8", "--mode=pse", "--parallel_subnets=2"),
        12, 37, "conditional",
    ),
    "resnet50": (
        ("--min_width=0.05", "--max_width=0.15", "--flops_targets=6,30,8", "--mode=sandwich"),
        12, 5, "pss",
    ),
}
COMMON = (
    f"--flagfile={SMOKE_FLAGS}", "--width_bins=20", "--epochs=1", "--steps_per_epoch=4", "--eval_winners_per_epoch=0",
    "--final_top_k=1", "--holdout_examples=32", "--noprogress",
)
SEARCH = ("--init=prior", "--population=4", "--generations=2", "--parents=2", "--mutations=2",
          "--crossovers=2", "--calibration_batches=1", "--noprogress")


def _ok(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("model", list(SPACES))
def test_train_search_retrain_and_export(tmp_path, model):
    space_flags, budget, genes, sampler = SPACES[model]
    job_dir, export_dir = tmp_path / "run", tmp_path / "export"
    _ok(run_tool("train.py", f"--job_dir={job_dir}", *COMMON, f"--model={model}", *space_flags))
    job = Job(str(job_dir))
    space = job.space
    assert space.model == model and space.width_bins == 20 and space.num_stages == genes
    assert job.run_config.sampling.subnet_sampler == sampler  # PSE-Net's own draw: no pools to prefer.
    assert all(space.contains(SubnetConfig.from_dict(w["config"])) for w, _ in job.winners())

    _ok(run_tool("search.py", f"--job_dir={job_dir}", f"--budgets={budget}", *SEARCH))
    (searched,) = json.load(open(job_dir / "search" / "searched.json"))
    config = SubnetConfig.from_dict(searched["config"])
    assert space.contains(config) and 0.8 * budget <= searched["value"] <= budget

    _ok(run_tool("finetune.py", f"--job_dir={job_dir}", "--subnets=searched", "--from_scratch", "--epochs=1",
                 "--steps_per_epoch=3", "--batch_size=16", "--noprogress"))
    (retrained,) = outputs.read_finetuned(str(job_dir / "finetune"))
    assert retrained["config"] == searched["config"] and retrained["mode"] == "from_scratch"

    # The retrained weights ship on request, whatever they validate at after a few smoke steps.
    _ok(run_tool("export.py", f"--job_dir={job_dir}", f"--export_dir={export_dir}", "--searched", "--finetuned",
                 "--finetuned_always", "--tflite_kinds=float32", "--nobundle", "--nolatency"))
    manifest = json.load(open(export_dir / "manifest.json"))
    (exported,) = [s for s in manifest["subnets"] if s["name"] == searched["name"]]
    assert exported["weights"] == "finetuned" and exported["val_top1"] == retrained["val_top1_after"]
    assert exported["weights_choice"]["weights"] == "finetuned"
    assert exported["weights_choice"]["finetuned_val_top1"] == retrained["val_top1_after"]
    assert exported["accuracy"]["keras"] == pytest.approx(retrained["val_top1_after"])
    assert abs(exported["accuracy"]["tflite_float32"] - retrained["val_top1_after"]) <= 1 / retrained["val_examples"]
    # Every group's channels ship: the genes' counts, inner widths independent of their inputs.
    assert exported["channels"] == list(config.channels)
