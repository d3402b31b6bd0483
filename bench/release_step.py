"""The PSS-Net release's MobileNetV1 training step in PyTorch, timed (a baseline for bench/train_step.py).

    git clone https://github.com/chenbong/PSS-Net /tmp/pssnet      # commit f696d13
    python bench/release_step.py --release_dir=/tmp/pssnet [--batch=32 --threads=2]

The release has no license, so none of its code is here: this script imports
the release's own network (`models.mobilenet_v1.Model`) and its
`utils.comm.set_active_subnet` from `--release_dir` and drives them through
the steps of the release's `train.py`, as that loop does them:

    max net: forward, cross-entropy with the labels, backward (its logits,
             detached, teach the others)
    chosen subnet: a forward without gradients to score it (the release's
             pool score; pss_tf takes the score from the training forward)
    chosen subnet, then min net: forward, KL divergence from the teacher's
             softmax (batch mean), backward
    one SGD step (momentum 0.9, Nesterov, weight decay 1e-4 on conv and
             classifier weights but not on depthwise kernels or BN)

with the same subnets as bench/train_step.py: the max net (224 px, width 1),
a mid-space subnet (176 px, width 0.875) and the min net (128 px, 0.75).
Synthetic data, one fixed batch; `--threads` intra-op threads. Prints one
JSON object: the median and fastest seconds per step.
"""

import argparse
import json
import os
import statistics
import sys
import time


def subnet(resolution: int, width: float) -> dict:
    """A MobileNetV1 config in the release's format (`set_active_subnet` reads these keys)."""
    return {
        "model_name": "mobilenet_v1", "infer_metric_type": "flops", "infer_metric_target": 0,
        "resolution": resolution, "stage_cout_mults": [width] * 14,
    }


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """The release's decay rule: 4-d weights that are not depthwise (dim 1 > 1) and 2-d ones."""
    groups = []
    for p in model.parameters():
        decayed = (p.dim() == 4 and p.shape[1] != 1) or p.dim() == 2
        groups.append({"params": [p], "weight_decay": weight_decay if decayed else 0.0})
    return groups


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release_dir", required=True, help="a clone of the PSS-Net release (chenbong/PSS-Net)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--min_resolution", type=int, default=128)
    parser.add_argument("--min_width", type=float, default=0.75)
    parser.add_argument("--chosen_resolution", type=int, default=176)
    parser.add_argument("--chosen_width", type=float, default=0.875)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model_file = os.path.join(args.release_dir, "models", "mobilenet_v1.py")
    if not os.path.isfile(model_file):
        raise SystemExit(f"--release_dir: {args.release_dir} holds no models/mobilenet_v1.py (a PSS-Net clone?)")

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sys.path.insert(0, os.path.abspath(args.release_dir))
    from models.mobilenet_v1 import Model
    from utils.comm import set_active_subnet

    model = Model([], args.classes, input_size=args.resolution)
    model.train()
    optimizer = torch.optim.SGD(parameter_groups(model, 1e-4), lr=0.1, momentum=0.9, nesterov=True)
    max_net = subnet(args.resolution, 1.0)
    chosen = subnet(args.chosen_resolution, args.chosen_width)
    min_net = subnet(args.min_resolution, args.min_width)
    images = torch.rand(args.batch, 3, args.resolution, args.resolution)
    labels = torch.randint(0, args.classes, (args.batch,))
    kl = torch.nn.KLDivLoss(reduction="batchmean")

    def step():
        optimizer.zero_grad()
        set_active_subnet(model, max_net)
        max_output = model(images)
        F.cross_entropy(max_output, labels).backward()
        teacher = F.softmax(max_output.detach(), dim=1)
        set_active_subnet(model, chosen)
        with torch.no_grad():
            score = -F.cross_entropy(model(images), labels)
        score.item()
        for config in (chosen, min_net):
            set_active_subnet(model, config)
            kl(F.log_softmax(model(images), dim=1), teacher).backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "benchmark": "release_step",
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "subnets": {"max": [args.resolution, 1.0], "chosen": [args.chosen_resolution, args.chosen_width],
                    "min": [args.min_resolution, args.min_width]},
        "first_step_s": round(first, 3),
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "repeats": args.repeats,
        "images_per_s": round(args.batch / statistics.median(times), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
