"""Which weights `tools/export.py --finetuned` ships: the better of the inherited and the fine-tuned."""

from pss_tf.export.subnets import WINNER, Subnet
from pss_tf.space.config import SubnetConfig

CONFIG = SubnetConfig.uniform("mobilenet_v1", 24, 0.5)


def winner():
    return Subnet(
        "flops_3M", CONFIG, WINNER, {"flops": 3.0}, 3.0, {"trainable": 990, "all_weights": 1000}, "flops", 3.0,
        val_top1=0.768, val_top5=0.99,
    )


def entry(after):
    return {"name": "flops_3M", "config": CONFIG.to_dict(), "val_top1_before": 0.768, "val_top5_before": 0.99,
            "val_top1_after": after, "val_top5_after": 0.98}


def test_fine_tuned_weights_that_validate_lower_are_not_shipped_and_the_manifest_says_so():
    subnet = winner()
    subnet.use_finetuned(entry(0.546), "w.npz")
    record = subnet.to_dict()
    assert subnet.finetuned_weights is None and record["weights"] == "inherited"
    assert record["val_top1"] == 0.768
    assert record["weights_choice"]["weights"] == "inherited"
    assert (record["weights_choice"]["inherited_val_top1"], record["weights_choice"]["finetuned_val_top1"]) == (
        0.768, 0.546)


def test_better_or_equal_fine_tuned_weights_ship():
    for after in (0.768, 0.80):
        subnet = winner()
        subnet.use_finetuned(entry(after), "w.npz")
        record = subnet.to_dict()
        assert record["weights"] == "finetuned" and record["val_top1"] == after
        assert record["inherited_val_top1"] == 0.768 and record["weights_choice"]["weights"] == "finetuned"


def test_always_ships_the_fine_tuned_weights():
    subnet = winner()
    subnet.use_finetuned(entry(0.546), "w.npz", always=True)
    record = subnet.to_dict()
    assert record["weights"] == "finetuned" and record["val_top1"] == 0.546
    assert record["weights_choice"]["rule"].startswith("fine-tuned weights on request")
