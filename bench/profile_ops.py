"""Where a profiled step spends its time: TF op types ranked by total time.

    python bench/train_step.py --model=mobilenet_v1 --profile_dir=/tmp/prof
    python bench/profile_ops.py /tmp/prof [--top=25]

Reads the `*.xplane.pb` that `tf.profiler.experimental` writes (no TensorBoard
needed) and sums the durations of the TensorFlow op events on the host
threads by op type (`name:Type` events). Times are summed over threads, so on
2 cores they can add up to twice the wall time. Prints one JSON object.
"""

import argparse
import collections
import glob
import json
import os
import sys


def op_totals(path: str) -> tuple[dict, int]:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(lambda: [0, 0])
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                # Op events are "node_name:OpType"; executor and runtime events use "::".
                if ":" not in name or "::" in name or name.startswith(("__inference", "Eager")):
                    continue
                op_type = name.rsplit(":", 1)[1]
                if not op_type or not (op_type[0].isupper() or op_type[0] == "_"):
                    continue
                totals[op_type][0] += event.duration_ps
                totals[op_type][1] += 1
    return totals, sum(t[0] for t in totals.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile_dir")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.profile_dir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        print(f"error: no *.xplane.pb under {args.profile_dir}", file=sys.stderr)
        return 2
    totals, everything = op_totals(files[-1])
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])[: args.top]
    print(json.dumps({
        "profile": files[-1],
        "op_time_s_summed_over_threads": round(everything / 1e12, 3),
        "ops": [
            {"op": op, "s": round(ps / 1e12, 3), "pct": round(100 * ps / everything, 1), "count": count}
            for op, (ps, count) in ranked
        ],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
