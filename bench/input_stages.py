"""What each stage of the input pipelines costs per image, at one thread and at two.

    python bench/input_stages.py --work_dir=/tmp/ipb          # the folder bench/input_pipeline.py writes
    python bench/input_stages.py --work_dir=/tmp/ipb --images=400 --passes=3 --out=stages.json

Each stage is a tf.data map over `--images` of the folder's JPEGs (read into memory
first), with `--threads` parallel calls, a private thread pool of that size and one
intra-op thread per element; milliseconds per image (wall time over the images) of the
fastest of `--passes` passes. Stages add one step at a time, so their differences are
what a step costs:

    decode_whole         tf.io.decode_image of the whole JPEG
    decode_window        the random resized crop's window only (sampling it included)
    window_resize        ... resized to --size (antialiased bilinear)
    window_resize_jitter ... colour jitter 0.4
    train                the whole training augmentation (window, resize, jitter, PCA
                         lighting 0.1, flip, normalisation), `preprocess_for_train`
    eval                 the evaluation preprocessing (shorter side to size / 0.875, centre
                         crop), `preprocess_for_eval` of the encoded image
"""

import argparse
import glob
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import lscpu_model_name, machine_state, report_json  # noqa: E402


def stages(size: int) -> dict:
    import tensorflow as tf

    from pss_tf.data import preprocessing as p

    def crop_seed(seed):
        return tf.random.experimental.stateless_split(seed, 4)[0]  # as preprocess_for_train draws it

    def window(data, seed):
        return p.decode_crop_window(data, 3, crop_seed(seed))

    def window_resize(data, seed):
        return tf.image.resize(window(data, seed), [size, size], antialias=True)

    return {
        "decode_whole": lambda data, seed: p.decode(data, 3),
        "decode_window": window,
        "window_resize": window_resize,
        "window_resize_jitter": lambda data, seed: p.color_jitter(window_resize(data, seed), 0.4, seed),
        "train": lambda data, seed: p.preprocess_for_train(
            data, size, seed, (0.25, 1.0), True, 0.4, 0.1, channels=3
        ),
        "eval": lambda data, seed: p.preprocess_for_eval(data, size, 0.875, channels=3),
    }


def time_stage(fn, encoded: list, threads: int, passes: int) -> float:
    """Milliseconds per image: the fastest of `passes` passes over `encoded`."""
    import tensorflow as tf

    key = tf.constant([1, 2], tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(encoded).enumerate()
    ds = ds.map(
        tf.autograph.experimental.do_not_convert(
            lambda i, data: fn(data, tf.random.experimental.stateless_fold_in(key, i))
        ),
        num_parallel_calls=threads,
        deterministic=True,
    )
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    ds = ds.with_options(options)
    for _ in ds.take(min(20, len(encoded))):  # Traced and warm.
        pass
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        count = sum(1 for _ in ds)
        best = min(best, (time.perf_counter() - start) / count * 1e3)
    return round(best, 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", required=True, help="an image folder (DIR/train/<class>/*.jpg)")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--stages", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    files = sorted(glob.glob(os.path.join(args.work_dir, "train", "*", "*.jpg")))[: args.images]
    if not files:
        raise SystemExit(f"--work_dir: no JPEGs under {args.work_dir}/train/<class>/")
    if args.passes < 1:
        raise SystemExit(f"--passes: must be at least 1, got {args.passes}")
    threads = [int(t) for t in args.threads.split(",") if t]
    all_stages = stages(args.size)
    chosen = [s for s in args.stages.split(",") if s] or list(all_stages)
    unknown = [s for s in chosen if s not in all_stages]
    if unknown:
        raise SystemExit(f"--stages: unknown {unknown}; expected some of {list(all_stages)}")
    encoded = []
    for path in files:
        with open(path, "rb") as f:
            encoded.append(f.read())
    import tensorflow as tf

    results = {
        "benchmark": "input_stages",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "lscpu_model_name": lscpu_model_name(),
        **machine_state(),
        "tensorflow": tf.__version__,
        "images": len(encoded),
        "size": args.size,
        "passes": args.passes,
        "ms_per_image": {},
    }
    for stage in chosen:
        results["ms_per_image"][stage] = {
            f"{t}_threads": time_stage(all_stages[stage], encoded, t, args.passes) for t in threads
        }
        print(stage, results["ms_per_image"][stage], file=sys.stderr)
    results["machine_state_at_end"] = machine_state()
    report_json(results, args.out)


if __name__ == "__main__":
    main()
