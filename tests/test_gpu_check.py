"""The GPU check (launch/gpu_check.sh) as CI runs it: `--device cpu --quick`, a real
subprocess, every step's code path at tiny sizes — a step broken here would be found here,
not on a lent GPU's clock. And its summary reports a failed or timed-out step."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["preflight", "install", "cuda_tests", "generation", "train_step", "stage", "configs"]
SCRIPT = ROOT / "launch" / "gpu_check.sh"


def _check(tmp_path, *args: str) -> subprocess.CompletedProcess:
    # the preflight's 15 s are for the GPU machine's idle cores; a loaded CI machine can need more
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PY": sys.executable, "WORK": str(tmp_path / "work"),
           "LIMIT_PREFLIGHT": "60"}
    env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path / "out"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_cpu_dry_run_runs_every_step_and_writes_each_json_in_one_folder(tmp_path):
    out = tmp_path / "out"
    run = _check(tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert [s["name"] for s in summary["steps"]] == STEPS
    assert all(s["status"] == "ok" for s in summary["steps"]), summary["steps"]
    tests = summary["cuda_tests"]  # pytest ran and collected them; without CUDA each is skipped
    assert tests["skipped"] >= 6 and tests["passed"] == tests["failure"] == tests["error"] == 0
    # what a lent machine returns: at most 8 plain files, no folders
    assert sorted(p.name for p in out.iterdir()) == ["config_step_cpu.json", "generation_cpu.json", "gpu_check.json",
                                                     "gpu_check.log", "stage_cpu.json", "train_step_cpu.json"]
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
    # the GPU configs' own step (the dry run: two of them, tiny heads), and what a stage of each would take
    configs = json.loads((out / "config_step_cpu.json").read_text())["configs"]
    assert sorted(configs) == ["configs/cifar100_resnet56.yaml", "configs/imagenet_resnet18.yaml"]
    for r in configs.values():
        assert r["median_step_s"] > 0 and r["steps_per_stage"] > 0 and r["stage_hours"] > 0
    assert "| configs | ok |" in run.stdout and "imagenet_resnet18: " in run.stdout
    # the stage ran the GPU path's precision (the teacher shares it: teacher.fit's Execution)
    assert "stage_1: the student computes in bfloat16 (train.precision=bf16)" in (out / "gpu_check.log").read_text()


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


def test_the_step_limits_add_up_to_at_most_420_seconds():
    """15 device minutes: a start of a few minutes, every step, and one failed step rerun alone."""
    limits = {m[0]: int(m[1]) for m in re.findall(r"^LIMIT_(\w+)=\$\{LIMIT_\1:-(\d+)\}", SCRIPT.read_text(), re.M)}
    assert sorted(limits) == sorted(s.upper() for s in STEPS)
    assert sum(limits.values()) <= 420, limits


def test_one_step_runs_alone_and_the_preflight_prints_versions(tmp_path):
    run = _check(tmp_path, "--only", "preflight")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [("preflight", "ok")]
    assert "| torch " in run.stdout and "preflight: ok" in run.stdout
    assert _check(tmp_path, "--only", "nonsense").returncode == 2


@pytest.mark.parametrize("device,status", [("cuda", "failed (0 tests ran: all skipped)"), ("cpu", "ok")])
def test_cuda_tests_that_all_skipped_fail_on_cuda(tmp_path, device, status):
    tsv = tmp_path / "steps.tsv"
    tsv.write_text("cuda_tests\tok\t3\t120\n")
    (tmp_path / "cuda_tests.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_cuda" name="test_a"><skipped/></testcase>'
        '</testsuite></testsuites>')
    rc = gpu_check.main([str(tmp_path), str(tsv), str(tmp_path / "cuda_tests.xml"), "--device", device])
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (rc, summary["steps"][0]["status"]) == (int(status != "ok"), status)
    (tmp_path / "cuda_tests.xml").write_text("<testsuites><testsuite/></testsuites>")  # nothing collected
    assert gpu_check.main([str(tmp_path), str(tsv), str(tmp_path / "cuda_tests.xml"), "--device", "cpu"]) == 1
