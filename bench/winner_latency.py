"""LiteRT latency of the subnets exported by tools/export.py, to compare backbones at equal MACs.

    python bench/winner_latency.py --export_dirs=runs/mbv1_export,runs/mbv3_export --threads=1

Each subnet's .tflite file of --kind (float32 by default) is timed as it ships:
batch 1, its uint8 input at the export's image size, the preprocessing in the
graph, on LiteRT's default CPU path with --threads interpreter threads. After
--warmup_s seconds of untimed invokes, each run is the mean of the invokes that
fill --min_repeat_s (0: one invoke per run); --passes rounds over every file
(alternating the order, so that drift in the machine's speed hits all files
alike) of --repeats runs each give the median and interquartile range.
Beside each latency: the subnet's MACs and parameters, its validation top-1 from
the run and, where the export measured it, the file's own top-1 (manifest.json).
`equal_targets` puts side by side the subnets of different exports that won the
same target (flops_2m in both). Prints one JSON object; latencies in ms.
"""

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import machine_state


def read_exports(export_dirs: list[str], kind: str) -> list[dict]:
    """Each export's manifest and the file of `kind` of each subnet; SystemExit naming the flag
    when a directory, manifest or file is missing (before any timing)."""
    if len(set(map(os.path.abspath, export_dirs))) != len(export_dirs):
        raise SystemExit(f"--export_dirs: a directory is given twice: {export_dirs}")
    exports = []
    for directory in export_dirs:
        path = os.path.join(directory, "manifest.json")
        if not os.path.isfile(path):
            raise SystemExit(f"--export_dirs: {directory} holds no manifest.json (export a run with tools/export.py)")
        with open(path) as f:
            manifest = json.load(f)
        files = []
        for subnet in manifest["subnets"]:
            entry = subnet.get("tflite", {}).get(kind)
            if entry is None:
                raise SystemExit(f"--kind: {directory} has no {kind} file of {subnet['name']} (it has "
                                 f"{sorted(subnet.get('tflite', {}))}); export it with --tflite_kinds={kind}")
            file = os.path.join(directory, entry["file"])
            if not os.path.isfile(file):
                raise SystemExit(f"--export_dirs: {file}, named by {path}, is missing")
            files.append(file)
        exports.append({"directory": directory, "manifest": manifest, "files": files})
    return exports


def quartiles(values: list[float]) -> dict:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": round(statistics.median(values), 4), "q1": round(q1, 4), "q3": round(q3, 4),
            "iqr": round(q3 - q1, 4), "runs": len(values)}


def winner_row(export: dict, subnet: dict, file: str, kind: str, runs_ms: list[float]) -> dict:
    manifest = export["manifest"]
    return {
        "export": export["directory"],
        "model": manifest["model"],
        "name": subnet["name"],
        "target": subnet.get("target"),
        "resolution": subnet["resolution"],
        "macs_m": subnet["macs_m"],
        "params": subnet["params"]["trainable"],
        "val_top1": subnet.get("val_top1"),
        f"tflite_{kind}_top1": subnet.get("accuracy", {}).get(f"tflite_{kind}"),
        "file": os.path.relpath(file, export["directory"]),
        "latency_ms": quartiles(runs_ms),
    }


def equal_targets(rows: list[dict]) -> list[dict]:
    """The targets won in more than one export, each with its winners side by side."""
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        if row["target"] is not None:
            by_name.setdefault(row["name"], []).append(row)
    return [
        {"name": name, "winners": [
            {k: row[k] for k in ("model", "export", "macs_m", "params", "val_top1")}
            | {"latency_median_ms": row["latency_ms"]["median"]} for row in group
        ]}
        for name, group in sorted(by_name.items(), key=lambda item: item[1][0]["target"])
        if len({row["export"] for row in group}) > 1
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export_dirs", required=True, help="comma-separated export directories (tools/export.py)")
    parser.add_argument("--kind", default="float32", choices=("float32", "dynamic_range", "int8", "int8_qat"),
                        help="which .tflite file of each subnet")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads")
    parser.add_argument("--warmup_s", type=float, default=1.0, help="untimed invokes first, for this long")
    parser.add_argument("--repeats", type=int, default=100, help="timed runs per file and pass")
    parser.add_argument("--min_repeat_s", type=float, default=0.0, help="a run's shortest length (0: one invoke)")
    parser.add_argument("--passes", type=int, default=3, help="rounds over every file")
    args = parser.parse_args(argv)
    for name in ("threads", "repeats", "passes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: must be at least 1, got {getattr(args, name)}")
    for name in ("warmup_s", "min_repeat_s"):
        if getattr(args, name) < 0:
            parser.error(f"--{name}: must not be negative, got {getattr(args, name)}")
    exports = read_exports([d for d in args.export_dirs.split(",") if d], args.kind)
    if not exports:
        parser.error("--export_dirs: name at least one export directory")

    from pss_tf.latency.measure import Protocol, Timer, runtime_info

    machine = machine_state()  # Before timing: how busy the machine was when it started.
    timer = Timer(args.threads, Protocol(warmup_s=args.warmup_s, repeats=args.repeats, min_repeat_s=args.min_repeat_s))
    jobs = [(e, s, f) for e in exports for s, f in zip(e["manifest"]["subnets"], e["files"])]
    contents = {}
    for _, _, file in jobs:
        with open(file, "rb") as f:
            contents[file] = f.read()
    runs: dict[str, list[float]] = {file: [] for _, _, file in jobs}
    for number in range(args.passes):
        for export, subnet, file in jobs if number % 2 == 0 else reversed(jobs):
            runs[file].extend(timer.time(contents[file]).repeats_ms)
            print(f"pass {number + 1}/{args.passes}: {export['manifest']['model']} {subnet['name']} "
                  f"{statistics.median(runs[file]):.3f} ms", file=sys.stderr, flush=True)
    rows = sorted((winner_row(e, s, f, args.kind, runs[f]) for e, s, f in jobs), key=lambda r: (r["macs_m"], r["model"]))
    result = {
        "benchmark": "winner_latency",
        **machine,
        "runtime": runtime_info(),
        "kind": args.kind,
        "threads": args.threads,
        "batch": 1,
        "protocol": {"warmup_s": args.warmup_s, "repeats": args.repeats, "min_repeat_s": args.min_repeat_s,
                     "passes": args.passes,
                     "statistic": "median and quartiles of every run of every pass; a run is the mean invoke time "
                                  "over min_repeat_s (one invoke at 0)"},
        "exports": [{"export": e["directory"], "model": e["manifest"]["model"], "dataset": e["manifest"]["dataset"],
                     "num_classes": e["manifest"]["num_classes"], "image_size": e["manifest"]["input"]["image_size"],
                     "subnets": len(e["files"])} for e in exports],
        "winners": rows,
        "equal_targets": equal_targets(rows),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
