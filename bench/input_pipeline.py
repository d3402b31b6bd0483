"""Input pipeline throughput on an ImageNet-shaped JPEG folder, beside torchvision's loader.

    python bench/input_pipeline.py                     # 2,000 JPEGs around 500x375 in a temp dir
    python bench/input_pipeline.py --work_dir=/tmp/ipb --repeats=5 --out=result.json

Writes the folder itself (photo-like content, JPEG quality 90, 4:2:0 chroma;
sizes drawn around ImageNet's typical 500x375), then times, each in a fresh
process and interleaved over `--repeats` rounds:

    pss_train_<size>   pss_tf's training stream (`pss_tf.data.load`, imagefolder) with the
                       release's augmentation: random resized crop (0.25, 1), colour
                       jitter 0.4, PCA lighting 0.1, flip, normalisation; batch `--batch`
    pss_eval_224       pss_tf's evaluation stream: resize the shorter side to 256, centre
                       crop 224, normalisation
    torch_train_<size>, torch_eval_224
                       torchvision's ImageFolder + DataLoader (`--torch_workers` worker
                       processes) with the release's transforms, when torch and
                       torchvision import

Each figure is images per second over `--batches` batches after `--warmup`
batches (workers started, caches warm). Prints one JSON object: every repeat's
value, the medians and pss_tf's ratio to torchvision for each pipeline.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_state, report_json  # noqa: E402

# The release's augmentation (see docs/FIDELITY.md).
CROP_SCALE = (0.25, 1.0)
JITTER = 0.4
LIGHTING = 0.1
EVAL_RESIZE, EVAL_CROP = 256, 224
# AlexNet's PCA of ImageNet RGB pixels in [0, 1], the standard values.
PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
PCA_EIGENVECTORS = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_FOLDER_MARK = "bench_folder.json"


# --- the folder ----------------------------------------------------------------------


def _photo_like(rng, height: int, width: int):
    """Smooth colour fields, edges and fine noise: JPEG sizes and decode work near real photos'."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.005, 0.05, 2)
        phase = rng.uniform(0, 6.3, 2)
        image[..., c] = 128 + 60 * np.sin(fx * x + phase[0]) * np.cos(fy * y + phase[1])
    for _ in range(6):  # A few flat-coloured rectangles: hard edges.
        y0, x0 = rng.integers(0, height - 8), rng.integers(0, width - 8)
        image[y0 : y0 + rng.integers(8, height // 2), x0 : x0 + rng.integers(8, width // 2)] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)  # Texture.
    return np.clip(image, 0, 255).astype(np.uint8)


def write_folder(root: str, images: int, classes: int, seed: int = 0) -> dict:
    """DATA_DIR/{train,val}/class_k/*.jpg: `images` training JPEGs, one validation image per class.

    Reuses a folder this function wrote with the same arguments.
    """
    import numpy as np
    import tensorflow as tf

    spec = {"images": images, "classes": classes, "seed": seed}
    mark = os.path.join(root, _FOLDER_MARK)
    if os.path.exists(mark):
        with open(mark) as f:
            written = json.load(f)
        if written.get("spec") == spec:
            return written
    rng = np.random.default_rng(seed)
    sizes, total_bytes = [], 0
    plan = [("train", i % classes, i) for i in range(images)] + [("val", k, k) for k in range(classes)]
    for split, label, i in plan:
        # Around ImageNet's typical 500x375 (landscape mostly, some portrait).
        long_side, short_side = int(rng.integers(440, 561)), int(rng.integers(330, 421))
        height, width = (short_side, long_side) if rng.random() < 0.8 else (long_side, short_side)
        data = tf.io.encode_jpeg(_photo_like(rng, height, width), quality=90).numpy()
        directory = os.path.join(root, split, f"class_{label}")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"{i:05d}.jpg"), "wb") as f:
            f.write(data)
        if split == "train":
            sizes.append((height, width))
            total_bytes += len(data)
    heights, widths = zip(*sizes)
    written = {
        "spec": spec,
        "train_images": images,
        "median_height": int(statistics.median(heights)),
        "median_width": int(statistics.median(widths)),
        "mean_kib": round(total_bytes / images / 1024, 1),
    }
    with open(mark + ".tmp", "w") as f:
        json.dump(written, f)
    os.replace(mark + ".tmp", mark)
    return written


# --- one measurement (run in its own process) ------------------------------------------


def _rate(batch_iter, warmup: int, batches: int) -> dict:
    """Images per second over `batches` batches of `batch_iter`, after `warmup` batches."""
    for _ in range(warmup):
        next(batch_iter)
    count = 0
    start = time.perf_counter()
    for _ in range(batches):
        count += len(next(batch_iter)[1])
    seconds = time.perf_counter() - start
    return {"images": count, "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 1)}


def _pss_case(kind: str, size: int, args) -> dict:
    from pss_tf import data

    if kind == "train":
        ds = data.load(
            "imagefolder", args.data_dir, "train", size, args.batch, True, seed=0,
            crop_scale=CROP_SCALE, color_jitter=JITTER, lighting=LIGHTING,
        )
    else:  # Evaluation preprocessing over the training images (the bigger split), repeated.
        ds = data.load(
            "imagefolder", args.data_dir, "train", size, args.batch, False, crop_fraction=EVAL_CROP / EVAL_RESIZE
        ).repeat()
    return _rate(ds.as_numpy_iterator(), args.warmup, args.batches)


class Lighting:
    """AlexNet's PCA lighting noise on a PIL image: one colour shift per image along the
    eigenvectors, alpha ~ N(0, std), on the [0, 1] scale the eigenvalues are for."""

    def __init__(self, std: float):
        import numpy as np

        self.std = std
        self.shift_basis = np.asarray(PCA_EIGENVECTORS, np.float32) * np.asarray(PCA_EIGENVALUES, np.float32)

    def __call__(self, image):
        import numpy as np
        from PIL import Image

        alpha = np.random.normal(0.0, self.std, 3).astype(np.float32)
        shift = 255.0 * (self.shift_basis @ alpha)
        pixels = np.asarray(image, np.float32) + shift
        return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def _endless(loader):
    while True:
        yield from loader


def _torch_case(kind: str, size: int, args) -> dict:
    import torch
    from torchvision import datasets, transforms

    if kind == "train":
        transform = transforms.Compose([
            transforms.RandomResizedCrop(size, scale=CROP_SCALE),
            transforms.ColorJitter(JITTER, JITTER, JITTER),
            Lighting(LIGHTING),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ])
    else:
        transform = transforms.Compose([
            transforms.Resize(round(size * EVAL_RESIZE / EVAL_CROP)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ])
    folder = datasets.ImageFolder(os.path.join(args.data_dir, "train"), transform)
    loader = torch.utils.data.DataLoader(
        folder, batch_size=args.batch, shuffle=kind == "train", num_workers=args.torch_workers,
        drop_last=kind == "train", persistent_workers=args.torch_workers > 0,
    )
    return _rate(_endless(loader), args.warmup, args.batches)


def run_case(args) -> dict:
    library, kind, size = args.case.split("_")
    measure = _pss_case if library == "pss" else _torch_case
    return measure(kind, int(size), args)


# --- the whole benchmark ------------------------------------------------------------------


def torch_versions(python: str) -> dict | None:
    """torch and torchvision versions under `python`, or None when they do not import."""
    script = "import json, torch, torchvision; print(json.dumps([torch.__version__, torchvision.__version__]))"
    result = subprocess.run([python, "-c", script], capture_output=True, text=True)
    if result.returncode:
        return None
    torch_version, torchvision_version = json.loads(result.stdout.strip().splitlines()[-1])
    return {"torch": torch_version, "torchvision": torchvision_version}


def _child(args, case: str, python: str) -> dict:
    command = [
        python, os.path.abspath(__file__), f"--case={case}", f"--data_dir={args.data_dir}", f"--batch={args.batch}",
        f"--batches={args.batches}", f"--warmup={args.warmup}", f"--torch_workers={args.torch_workers}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{case} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarise(values: dict[str, list[float]]) -> dict:
    """Median per case, and pss_tf's median over torchvision's for each pipeline both ran."""
    medians = {case: round(statistics.median(v), 1) for case, v in values.items()}
    ratios = {}
    for case, median in medians.items():
        if case.startswith("pss_") and "torch_" + case[4:] in medians:
            ratios[case[4:] + "_pss_over_torch"] = round(median / medians["torch_" + case[4:]], 2)
    return {"median_images_per_s": medians, "ratios": ratios}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="training JPEGs to write")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sizes", default="224,128", help="training output sizes (evaluation: 224)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=0, help="timed batches per figure (0: one epoch's worth)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--torch_workers", type=int, default=2)
    parser.add_argument("--torch_python", default=sys.executable, help="interpreter for the torchvision side")
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument("--work_dir", default=None, help="where the folder goes (reused; default: a temp dir)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # One measurement, in a child process.
    parser.add_argument("--data_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)))
        return
    for flag in ("images", "classes", "batch", "repeats", "warmup"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag}: must be at least 1, got {getattr(args, flag)}")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--sizes: expected positive comma-separated sizes, got {args.sizes!r}")
    args.batches = args.batches or max(1, args.images // args.batch)
    versions = None if args.skip_torch else torch_versions(args.torch_python)

    with tempfile.TemporaryDirectory() as scratch:
        args.data_dir = args.work_dir or scratch
        print(f"writing {args.images} JPEGs to {args.data_dir}", file=sys.stderr)
        folder = write_folder(args.data_dir, args.images, args.classes)
        cases = [f"pss_train_{s}" for s in sizes] + [f"pss_eval_{EVAL_CROP}"]
        if versions:
            cases += [f"torch_train_{s}" for s in sizes] + [f"torch_eval_{EVAL_CROP}"]
        import tensorflow as tf

        results = {
            "benchmark": "input_pipeline",
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "machine": platform.machine(),
            **machine_state(),
            "tensorflow": tf.__version__,
            **(versions or {"torch": None, "torchvision": None}),
            "folder": folder,
            "batch": args.batch,
            "timed_batches": args.batches,
            "warmup_batches": args.warmup,
            "torch_workers": args.torch_workers if versions else None,
            "repeats": args.repeats,
        }
        values = {case: [] for case in cases}
        details = {case: [] for case in cases}
        for repeat in range(args.repeats):
            for case in cases:  # Interleaved, so a slow stretch of the machine hits every case.
                python = args.torch_python if case.startswith("torch_") else sys.executable
                measured = _child(args, case, python)
                values[case].append(measured["images_per_s"])
                details[case].append(measured)
                rate = measured["images_per_s"]
                print(f"repeat {repeat + 1}/{args.repeats} {case}: {rate} images/s", file=sys.stderr)
    results["images_per_s"] = values
    results.update(summarise(values))
    results["runs"] = details
    results["machine_state_at_end"] = machine_state()
    report_json(results, args.out)


if __name__ == "__main__":
    main()
