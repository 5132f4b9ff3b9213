"""Faults real clusters have: a disk that fills up during a checkpoint write.

The full disk is real: the stage directory is a tmpfs mounted with room for one checkpoint
and a half, so the second checkpoint's write fails with ENOSPC inside Accelerate or torch —
no hook in the product code. Needs root (mount); skipped with the reason otherwise."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, TINY_RUN_CONFIG, refused_in_one_line, train_tiny_run

from neumeta_dist import checkpoint as ckpt
from neumeta_dist.training import pipeline

ROOT = Path(__file__).resolve().parents[1]
PAGE = 4096


def _pages(folder: Path) -> int:
    """Bytes `folder`'s files take on a tmpfs (whole pages)."""
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) → a tmpfs at the given folder; unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root")
    mounted = []

    def mount(folder: Path, size: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
        mounted.append(folder)
        return folder
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one_whole_stops_in_one_line_and_resumes(
        tmp_path, small_disk, capsys):
    whole = train_tiny_run(tmp_path / "whole")  # the uninterrupted run: checkpoints after steps 1 and 2
    size = _pages(whole / "stage_1" / "checkpoint_00000001")
    run = tmp_path / "full"
    shutil.copytree(whole / "teacher", run / "teacher")
    shutil.copy2(whole / "config.yaml", run / "config.yaml")
    stage = small_disk(run / "stage_1", size + size // 2)  # room for one checkpoint and a half
    argv = ["--config", str(ROOT / TINY_RUN_CONFIG), *TINY_RUN, f"run_dir={run}"]
    line = refused_in_one_line(capsys, pipeline.main, argv)
    assert "checkpoint_00000002 could not be written" in line, line
    assert "checkpoint_00000001 is the newest whole checkpoint and is untouched" in line and "bytes free" in line
    assert ckpt.problem(stage / "checkpoint_00000001") is None  # whole by its manifest
    assert sorted(p.name for p in stage.iterdir()) == ["checkpoint_00000001"]  # the partial one is gone
    # space freed: the relaunch resumes from it and ends with the uninterrupted run's network
    subprocess.run(["mount", "-o", f"remount,size={64 * size}", str(stage)], check=True)
    pipeline.main(argv)
    a, b = (torch.load(d / "stage_1" / "final.pt", weights_only=True)["model"] for d in (whole, run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_stage_killed_inside_checkpoint_writes_by_sigkill_and_sigterm_resumes_bitwise(tmp_path, monkeypatch):
    """The short form of benchmarks/kill_resume.py (20 kills on 2 processes, docs/distributed.md):
    one process, killed twice, each time inside a checkpoint write found by polling for its
    temporary directory — SIGKILL, then SIGTERM — and resumed: the end is bit for bit the
    uninterrupted run's (trained in this process, as the teacher, to save two launches)."""
    import random
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from kill_resume import kill_chain, run_to_end, same_result, train_here
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the launches' threads: the same bits in this process
    teacher = train_here(tmp_path / "teacher_run", steps=12, stage=0) / "teacher"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for d in (whole, killed):
        shutil.copytree(teacher, d / "teacher")
    train_here(whole, steps=12, stage=1)
    events = kill_chain(killed, 2, random.Random(0), 0.0, nproc=1, steps=12,
                        plan=[("SIGKILL", "write"), ("SIGTERM", "write")])
    assert [(e["signal"], e["in_write"]) for e in events] == [("SIGKILL", True), ("SIGTERM", True)], events
    assert events[1]["status"] == 75  # SIGTERM: the checkpoint at the next step boundary, then 75
    run_to_end(killed, 1, 12, "--stage", "1")
    equal, diff = same_result(whole, killed)
    assert equal, f"max |difference| {diff}"
