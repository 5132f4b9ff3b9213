"""The GPU check (launch/gpu_check.sh) as CI runs it: `--device cpu --quick`, a real
subprocess, every step's code path at tiny sizes — a step broken here would be found here,
not on a lent GPU's clock. And its summary reports a failed or timed-out step."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["install", "cuda_tests", "generation", "train_step", "stage"]


def test_cpu_dry_run_runs_every_step_and_writes_each_json_in_one_folder(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PY": sys.executable, "WORK": str(tmp_path / "work")}
    env.pop("OUT", None)
    run = subprocess.run(["bash", "launch/gpu_check.sh", "--device", "cpu", "--quick", "--out", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert [s["name"] for s in summary["steps"]] == STEPS
    assert all(s["status"] == "ok" for s in summary["steps"]), summary["steps"]
    tests = summary["cuda_tests"]  # pytest ran and collected them; without CUDA each is skipped
    assert tests["skipped"] >= 6 and tests["passed"] == tests["failure"] == tests["error"] == 0
    # what a lent machine returns: at most 8 plain files, no folders
    assert sorted(p.name for p in out.iterdir()) == ["generation_cpu.json", "gpu_check.json", "gpu_check.log",
                                                     "stage_cpu.json", "train_step_cpu.json"]
    gen = json.loads((out / "generation_cpu.json").read_text())
    assert gen["measured_bf16_matmul_peak"]["tflop_per_s"] > 0
    assert {"ours", "reference"} <= set(gen["families"]["resnet20"]["variants"])
    step = json.loads((out / "train_step_cpu.json").read_text())["cases"]["fmnist-resnet20"]
    assert step["flops_per_step"] > 0 and step["variants"]["ours"]["percent_of_measured_bf16_peak"] > 0
    stage = json.loads((out / "stage_cpu.json").read_text())
    assert stage["model"] == {"family": "resnet20", "width": 1.0}  # the standard 16/32/64 network
    for k in ("0", "1"):
        assert stage["stages"][k]["wall_s"] > 0 and stage["stages"][k]["images_per_s"] > 0
        assert stage["stages"][k]["peak_memory_gib"] > 0
    assert "| stage | ok |" in run.stdout


def test_summary_reports_failed_and_timed_out_steps_and_exits_1(tmp_path, capsys):
    tsv = tmp_path / "steps.tsv"
    tsv.write_text("install\tok\t3\t30\ncuda_tests\tfailed (rc 1)\t40\t150\ngeneration\ttimeout\t90\t90\n")
    (tmp_path / "cuda_tests.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_cuda" name="test_a"/>'
        '<testcase classname="tests.test_cuda" name="test_b"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_cuda" name="test_c"><skipped/></testcase></testsuite></testsuites>')
    assert gpu_check.main([str(tmp_path), str(tsv), str(tmp_path / "cuda_tests.xml")]) == 1
    table = capsys.readouterr().out
    assert "| generation | timeout | 90 (90) |" in table and "FAILED tests.test_cuda::test_b" in table
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["cuda_tests"]["passed"] == 1 and summary["cuda_tests"]["failed"] == ["tests.test_cuda::test_b"]
    assert summary["total_s"] == 133
