"""The idle tail of tools/train.py: seconds from its last output line to its exit.

    python bench/exit_tail.py --rounds=2 -- --flagfile=configs/fashion_mnist.flags --max_steps=80

Runs the training tool (the flags after `--`, each run into a fresh job directory
under --work_dir) in two ways, alternating, --rounds times each:

    teardown        `cli.run(main)`: Python's usual exit, the interpreter tearing
                    down every object left (the baseline)
    skip_teardown   `cli.run(main, skip_teardown=True)`, as tools/train.py ends:
                    atexit handlers and flushes, then the process ends

For each run: wall seconds, and the tail: from the moment its last line (stdout
and stderr together) arrives to the moment the process has exited. Prints one JSON
object with every run, the median tail of each way, the CPU (`lscpu`) and load.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from common import lscpu_model_name, machine_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = ("teardown", "skip_teardown")
# Loads tools/train.py without running it, then runs its main the way asked.
LAUNCHER = """
import runpy, sys
way, sys.argv = sys.argv[1], sys.argv[2:]  # argv: the tool's path, then its flags
tool = runpy.run_path(sys.argv[0], run_name="exit_tail_bench")
from pss_tf import cli
cli.run(tool["main"], skip_teardown=way == "skip_teardown")
"""


def one_run(way: str, tool_flags: list[str], job_dir: str) -> dict:
    shutil.rmtree(job_dir, ignore_errors=True)
    command = [sys.executable, "-c", LAUNCHER, way, os.path.join(ROOT, "tools", "train.py"), *tool_flags,
               f"--job_dir={job_dir}", "--noprogress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    last_line, last_text, result_text = start, b"", b""
    for line in process.stdout:
        last_line, last_text = time.perf_counter(), line
        if b"outputs in" in line:  # The tool's own last words; its log lines may come after them.
            result_text = line
    status = process.wait()
    end = time.perf_counter()
    if status:
        raise SystemExit(f"{way}: the tool failed with status {status}: {last_text.decode(errors='replace')}")
    return {
        "way": way, "status": status, "wall_s": round(end - start, 2), "tail_s": round(end - last_line, 2),
        "last_line": last_text.decode(errors="replace").strip()[-120:],
        "result_line": result_text.decode(errors="replace").strip()[-120:],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work_dir", default="/tmp/exit_tail")
    parser.add_argument("tool_flags", nargs="*", help="tools/train.py's flags (after --)")
    args = parser.parse_args()
    tool_flags = args.tool_flags or ["--flagfile=configs/smoke.flags"]
    state = machine_state()
    runs = []
    for round_ in range(args.rounds):
        for way in WAYS:
            run = one_run(way, tool_flags, os.path.join(args.work_dir, f"{way}_{round_}"))
            print(json.dumps(run), file=sys.stderr, flush=True)
            runs.append(run)
    print(json.dumps({
        "benchmark": "exit_tail",
        "cpu_model": lscpu_model_name(),
        "machine_before": state,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "tool_flags": tool_flags,
        "rounds": args.rounds,
        "median_tail_s": {way: statistics.median(r["tail_s"] for r in runs if r["way"] == way) for way in WAYS},
        "runs": runs,
    }, indent=2))


if __name__ == "__main__":
    main()
