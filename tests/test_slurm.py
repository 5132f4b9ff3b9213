"""`launch/submit.py` against a real single-node SLURM (slurm/local/start.sh): the stage plan
runs as a chain of dependent jobs, survives a requeue, stops on a failure, and a re-run after
the end submits nothing. Synthetic data, tiny sizes, one CPU process per job.

Skipped, with the reason, only where the local SLURM cannot be started (not root, no apt).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# 3 INR stages (6 blocks, 2 per stage) + stage 0; 30 steps per stage, a checkpoint every 5:
# the requeue test requeues a stage once its first checkpoint shows that its loop runs
TINY = ["data.dataset=synthetic", "data.train_limit=256", "data.test_limit=128", "data.batch_size=32",
        "data.val_fraction=0.25", "model.width=0.25", "teacher.epochs=1", "smoothing.two_opt_rounds=1",
        "meta.generated=authors", "meta.min_width=0.5", "meta.norm=fold", "inr.hidden=8", "inr.layers=1",
        "inr.num_freqs=2", "train.max_steps=30", "train.save_every=5", "train.log_every=10",
        "train.widths_per_step=1", "recipe.init=copy", "recipe.warmup_steps=0", "recipe.units_per_stage=2",
        "eval.widths=[1.0]"]
STEPS = 30
WAIT_S = 600  # bound on any one chain; a hang fails the test instead of the suite


@pytest.fixture(scope="session")
def cluster():
    """The local SLURM, started for the session (and stopped after, if this fixture started it)."""
    if os.geteuid() != 0:
        pytest.skip("SLURM tests start a local slurmctld/slurmd, which needs root (run as root, or sudo make test)")
    was_up = subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0 if shutil.which("sinfo") else False
    out = subprocess.run(["bash", str(ROOT / "slurm/local/start.sh")], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        pytest.skip(f"local SLURM could not be started: {(out.stderr.strip() or out.stdout.strip()).splitlines()[-1]}")
    yield
    if not was_up:
        subprocess.run(["bash", str(ROOT / "slurm/local/stop.sh")], capture_output=True, timeout=60)


def submit(run_dir: Path, *args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(ROOT / "launch/submit.py"), "--config", str(ROOT / "configs/blockwise.yaml"),
           "--profile", str(ROOT / "slurm/local.yaml"), *args, *TINY, f"run_dir={run_dir}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    print(f"$ cluster/submit.py {' '.join(args)}\n{out.stdout}{out.stderr}")  # the job tables, with pytest -s
    return out


def tables(stdout: str) -> list[list[dict]]:
    """Every job table that cluster/submit.py printed, as rows."""
    out = []
    for line in stdout.splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if parts[:2] == ["stage", "job"]:
            out.append([])
        elif out and len(parts) == 5 and parts[0].isdigit():
            out[-1].append(dict(zip(("stage", "job", "state", "detail", "log"), parts)))
    return out


def table(stdout: str) -> list[dict]:
    return tables(stdout)[-1]


def queue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%r"], capture_output=True,
                          text=True, timeout=30).stdout.strip()


def read_log(row: dict) -> str:
    log = Path(row["log"])
    return log.read_text() + log.with_suffix(".err").read_text()


def job_start(row: dict) -> float:
    """When Submitit started the job (its first log line)."""
    stamp = re.search(r"submitit INFO \((\S+ \S+)\) - Starting", read_log(row)).group(1)
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def digest(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def copy_run(src: Path, dst: Path, *parts: str) -> Path:
    for part in parts:
        shutil.copytree(src / part, dst / part)
    return dst


@pytest.fixture(scope="module")
def chain(cluster, tmp_path_factory):
    """The whole plan from an empty run directory: submit --wait."""
    run_dir = tmp_path_factory.mktemp("chain") / "run"
    t0 = time.perf_counter()
    out = submit(run_dir, "--wait")
    elapsed = time.perf_counter() - t0
    print(f"3-stage tiny chain (stage 0 + 3 INR stages, 4 jobs): {elapsed:.1f} s")
    assert out.returncode == 0, out.stdout + out.stderr
    return run_dir, out, elapsed


def test_the_plan_runs_as_dependent_jobs_each_starting_from_the_previous_stage(chain):
    run_dir, out, _ = chain
    submitted = tables(out.stdout)[0]
    assert all(r["state"] == "SUBMITTED" for r in submitted)
    assert [r["stage"] for r in submitted] == ["0", "1", "2", "3"]
    assert submitted[0]["detail"] == "-"
    assert all(r["detail"] == f"afterok:{p['job']}" for p, r in zip(submitted, submitted[1:]))
    final = table(out.stdout)
    assert [r["state"] for r in final] == ["COMPLETE"] * 4
    for k in (1, 2, 3):
        src = run_dir / ("teacher/reference.pt" if k == 1 else f"stage_{k - 1}/final.pt")
        log = read_log(final[k])
        assert f"stage {k} starts from {src} sha256:{digest(src)}" in log  # the file stage k-1 left
        assert job_start(final[k]) >= (src.stat().st_mtime - 1)  # started after the hand-off was written
        assert (run_dir / f"stage_{k}" / "COMPLETE").is_file()
        assert "resuming" not in log


def test_a_second_submit_after_completion_submits_nothing(chain):
    run_dir, _, _ = chain
    before = (run_dir / "slurm/jobs.json").read_text()
    out = submit(run_dir, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "nothing to submit" in out.stdout
    assert [r["state"] for r in table(out.stdout)] == ["COMPLETE"] * 4
    assert (run_dir / "slurm/jobs.json").read_text() == before


def test_a_requeued_job_resumes_from_its_signal_checkpoint_and_the_chain_ends_with_the_same_inr(chain, tmp_path):
    ref, _, _ = chain
    run_dir = copy_run(ref, tmp_path / "run", "teacher", "stage_1")
    out = submit(run_dir, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {r["stage"]: r for r in table(out.stdout)}
    assert [rows[k]["state"] for k in "0123"] == ["COMPLETE", "COMPLETE", "SUBMITTED", "SUBMITTED"]
    job, first = rows["2"]["job"], run_dir / "stage_2/checkpoint_00000005/meta.json"
    deadline = time.monotonic() + WAIT_S
    while not first.is_file():  # stage 2's loop is at step 5 of 30
        assert time.monotonic() < deadline and not (run_dir / "stage_2/COMPLETE").exists(), queue_state(job)
        time.sleep(0.05)
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)

    again = submit(run_dir, "--wait")  # while requeued: follows the queued jobs, submits nothing
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to submit" in again.stdout
    log = read_log(rows["2"])  # both attempts: Submitit appends
    stopped = re.search(r"stage_2 step (\d+): stopped on SIGTERM", log)
    assert stopped, "the requeue reached stage 2 after its step loop (raise train.max_steps)\n" + log[-2000:]
    step = int(stopped.group(1))
    assert 5 < step < STEPS  # not the periodic checkpoint: the one written on the signal
    assert f"resuming stage_2 from checkpoint_{step:08d} (step {step})" in log
    a = torch.load(ref / "stage_3/final.pt", weights_only=True)
    b = torch.load(run_dir / "stage_3/final.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]) for k in a["ema"]["shadow"])


def test_a_failed_stage_cancels_its_dependants_and_is_reported_with_its_log(chain, tmp_path):
    ref, _, _ = chain
    run_dir = copy_run(ref, tmp_path / "run", "teacher", "stage_1")
    (run_dir / "stage_1/final.pt").write_bytes(b"truncated")  # what stage 2 starts from
    out = submit(run_dir, "--wait")
    assert out.returncode != 0
    rows = {r["stage"]: r for r in table(out.stdout)}
    assert rows["2"]["state"] == "FAILED" and rows["3"]["state"] == "CANCELLED"
    assert queue_state(rows["3"]["job"]).startswith("CANCELLED")
    assert "error: stage 2 failed" in out.stderr and f"log: {rows['2']['log']}" in out.stderr
    assert "stage_1/final.pt is unreadable" in out.stderr  # the training's own error, in the report
    assert "stage 3: cancelled" in out.stderr
    assert not (run_dir / "stage_3").exists()


# Without a cluster: what a job would be asked for, and how it starts Accelerate.

def test_dry_run_prints_every_profile_field_as_sbatch_options_and_submits_nothing(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "launch/submit.py"), "--config", str(ROOT / "configs/blockwise.yaml"),
                          "--profile", str(ROOT / "slurm/example_gpu.yaml"), "--dry-run", "--stages", "1:2", *TINY,
                          f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode != 0 and "stage 0 is neither complete nor queued: include it (--stages 0:2)" in out.stderr
    (tmp_path / "run/teacher").mkdir(parents=True)
    (tmp_path / "run/teacher/reference.pt").write_bytes(b"")  # stage 0 complete
    out = subprocess.run(out.args, capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    stage1, stage2 = out.stdout.split("# stage 2")
    for opt in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=1", "--cpus-per-task=32", "--mem=256G",
                "--partition=gpu", "--account=my_project", "--qos=normal", "--constraint=a100", "--time=240",
                "--signal=USR2@120", "--exclusive", "--kill-on-invalid-dep=yes"):
        assert f"#SBATCH {opt}" in stage1 and f"#SBATCH {opt}" in stage2, opt
    assert "--dependency" not in stage1 and "#SBATCH --dependency='afterok:<job of stage 1>'" in stage2
    assert "--num_machines 2 --machine_rank $SLURM_NODEID --num_processes 8" in stage1
    assert "--mixed_precision no" in stage1 and "--multi_gpu" in stage1 and "--stage 1" in stage1
    assert not (tmp_path / "run/slurm").exists()


def test_each_node_launches_accelerate_with_its_rank_and_the_first_host_as_main():
    from neumeta_dist.cluster.slurm import Rendezvous, accelerate_command, load_profile
    prof = load_profile(ROOT / "slurm/example_zero3.yaml")
    where = Rendezvous(nodes=3, node_rank=2, main_host="gpu017", port=20123)
    cmd = " ".join(accelerate_command(prof, where, ["--stage", "1"]))
    assert cmd.startswith(f"{sys.executable} -m accelerate.commands.launch --config_file configs/accelerate/zero3.yaml")
    assert ("--num_machines 3 --machine_rank 2 --num_processes 24 --main_process_ip gpu017 "
            "--main_process_port 20123") in cmd
    assert "--multi_gpu" not in cmd  # the Accelerate config file decides the distributed type
    assert cmd.endswith("launch/train.py --stage 1")


def test_a_multi_node_cpu_job_launches_torchrun_so_that_its_nodes_form_one_process_group():
    """Without --multi_gpu (or a config file) Accelerate's plain launcher sets no ranks: every
    node's process would train alone. The real 2-machine run is in tests/test_distributed.py."""
    import dataclasses

    from neumeta_dist.cluster.slurm import Rendezvous, accelerate_command, load_profile
    one = load_profile(ROOT / "slurm/local.yaml")
    two = dataclasses.replace(one, nodes=2)
    cmd = accelerate_command(two, Rendezvous(nodes=2, node_rank=1, main_host="cpu001", port=20001), ["--stage", "0"])
    assert "--multi_gpu" in cmd and " ".join(cmd).count("--num_machines 2 --machine_rank 1 --num_processes 2") == 1
    assert "--multi_gpu" not in accelerate_command(one, Rendezvous(1, 0, "cpu001", 20001), ["--stage", "0"])


def test_a_profile_with_an_unknown_key_or_bad_value_is_a_one_line_error(tmp_path):
    from neumeta_dist.cluster.slurm import load_profile
    from neumeta_dist.config import ConfigError
    bad = tmp_path / "p.yaml"
    bad.write_text("nodes: 2\ngpus: 4\n")
    with pytest.raises(ConfigError, match=r"p.yaml: unknown key gpus \(allowed in top level: partition, "):
        load_profile(bad)
    bad.write_text("nodes: 0\n")
    with pytest.raises(ConfigError, match=r"p.yaml: nodes=0 is out of range \(allowed: >= 1\)"):
        load_profile(bad)
    with pytest.raises(ConfigError, match=r"profile .*nope.yaml not found"):
        load_profile(tmp_path / "nope.yaml")


def _checkout_copy(dst: Path) -> str:
    """A git checkout of this code of its own (the test edits it): returns its HEAD."""
    for part in ("neumeta_dist", "launch", "configs", "slurm", "pyproject.toml"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst / part)
    git = lambda *a: subprocess.run(["git", "-C", str(dst), "-c", "user.name=t", "-c", "user.email=t@t", *a],
                                    check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "the code as submitted")
    return git("rev-parse", "HEAD")


def test_a_chain_runs_the_code_it_was_submitted_with_though_the_checkout_changes_under_it(cluster, tmp_path):
    """Submit from a checkout with an uncommitted change (included and recorded), edit the
    checkout while the first job runs so that its code fails, and the later stage still runs
    the submitted code and records the submitted commit."""
    import json
    checkout, run_dir = tmp_path / "checkout", tmp_path / "run"
    head = _checkout_copy(checkout)
    train_py = checkout / "launch" / "train.py"
    entry = "    exit_skipping_teardown(lambda: main(sys.argv[1:]))"
    train_py.write_text(train_py.read_text().replace(entry, '    print("ran the submitted code", flush=True)\n' + entry))
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(checkout)}
    run = lambda *a: subprocess.run(
        [sys.executable, str(checkout / "launch/submit.py"), "--config", str(checkout / "configs/blockwise.yaml"),
         "--profile", str(checkout / "slurm/local.yaml"), *a, *TINY, "recipe.incremental=false",
         "train.max_steps=4", "train.save_every=0", f"run_dir={run_dir}"],
        capture_output=True, text=True, env=env, cwd=checkout, timeout=WAIT_S)
    out = run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert [r["stage"] for r in table(out.stdout)] == ["0", "1"]
    assert f"code of stages 0,1: commit {head}+dirty" in out.stdout
    first = json.loads((run_dir / "slurm/jobs.json").read_text())["stages"]["0"]["job_id"]
    deadline = time.monotonic() + 120
    while not queue_state(first).startswith(("RUNNING", "COMPLETED")) and time.monotonic() < deadline:
        time.sleep(0.5)
    broken = 'raise SystemExit("error: the edited checkout ran")\n'
    train_py.write_text(f"import sys\n{broken}")  # what a job reading the checkout now would run
    pipeline_py = checkout / "neumeta_dist" / "training" / "pipeline.py"
    pipeline_py.write_text(pipeline_py.read_text().replace("def main(argv: list[str] | None = None) -> None:\n",
                                                           "def main(argv: list[str] | None = None) -> None:\n    "
                                                           + broken))
    edited_at = time.time()
    out = run("--status", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = table(out.stdout)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    assert job_start(rows[1]) >= edited_at - 1  # the later stage started after the edit
    later = read_log(rows[1])
    assert "ran the submitted code" in later and "edited checkout" not in later
    made_by = json.loads((run_dir / "stage_1" / "COMPLETE").read_text())["made_by"]
    assert made_by["commit"] == f"{head}+dirty"
    snap = next((run_dir / "slurm" / "snapshots").iterdir())
    assert "ran the submitted code" in (snap / "uncommitted.diff").read_text()
    assert json.loads((snap / "SNAPSHOT.json").read_text())["commit"] == f"{head}+dirty"
