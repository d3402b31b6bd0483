"""bench/exit_tail.py: both ways of ending tools/train.py run to the end and leave the same
files; the report holds every run and names the CPU (its seconds are not checked)."""

import json
import os
import subprocess
import sys

import pytest
from support import ROOT, subprocess_env

SCRIPT = os.path.join(ROOT, "bench", "exit_tail.py")


@pytest.mark.slow
def test_both_ways_of_ending_finish_the_run_and_leave_the_same_files(tmp_path):
    result = subprocess.run(
        [sys.executable, SCRIPT, "--rounds=1", f"--work_dir={tmp_path}", "--",
         "--flagfile=configs/smoke.flags", "--max_steps=2"],
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [run["way"] for run in report["runs"]] == ["teardown", "skip_teardown"]
    for run in report["runs"]:
        # The tool's result line; its log lines, drained by another process, may come after it.
        assert run["status"] == 0 and "after 2 steps; outputs in" in run["result_line"], run
    assert set(report["median_tail_s"]) == {"teardown", "skip_teardown"} and report["cpu_model"]
    jobs = [tmp_path / f"{way}_0" for way in ("teardown", "skip_teardown")]
    listings = [sorted(os.path.relpath(os.path.join(d, f), job) for d, _, files in os.walk(job) for f in files
                       if not f.startswith("events.out")) for job in jobs]
    assert listings[0] == listings[1] and "checkpoints/ckpt-2.index" in listings[0]
    assert (jobs[0] / "pools.json").read_text() == (jobs[1] / "pools.json").read_text()
