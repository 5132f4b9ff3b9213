"""Two real processes on the CPU (gloo), under DDP, DeepSpeed ZeRO-2 and ZeRO-3, launched as a
user launches them: `accelerate launch --config_file configs/accelerate/<mode>.yaml`.

Per mode, one uninterrupted stage and one that dies by SIGKILL mid-stage and is relaunched;
under DDP and ZeRO-3 also one relaunched on 1 process, then on 2 again (elastic resume);
under DDP also the teacher (stage 0) killed mid-epoch and relaunched, and a stage run as two
machines × one process on localhost, launched as a 2-node SLURM job launches it.
`NEUMETA_TRACE_DIR` makes every rank record the images it consumed and its final whole
parameters (neumeta_dist/training/probe.py). The runs are shared by the tests (module-scoped cache).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from neumeta_dist.config import load_config
from neumeta_dist.training.probe import read_trace

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
from conftest import free_port  # noqa: E402
from test_pipeline import TINY  # noqa: E402

MODES = ("ddp", "zero2", "zero3")
# SkipInit leaves the α of blocks a stage does not generate unused (frozen, partitioned under
# ZeRO-3); clipping by norm is what DeepSpeed does, so the three modes run the same maths.
# KD on: under ZeRO-3 the teacher is a sharded inference engine, elsewhere a replicated module.
DIST = [*TINY, "meta.norm=skipinit", "train.clip_mode=norm", "train.max_steps=8", "train.save_every=3",
        "train.log_every=1", "recipe.warmup_steps=20", "teacher.epochs=3", "train.lr=4e-3", "loss.kd=1"]
TEACHER = {"ddp": "replicated", "zero2": "replicated", "zero3": "sharded"}
KILL_AT = {"ddp": 7, "zero2": 7, "zero3": 5}  # checkpoints at 3 and 6 (ZeRO-3: at 3 only) survive
# The elastic chain (DDP and ZeRO-3 alike): 2 processes to step 3, 1 process from there to
# step 5 (finishing the first epoch's rest: 9 batches per rank on 2 processes, 2 per step), 2
# processes again to the end, across the epoch end.
ELASTIC_MODES, ELASTIC_FROM = ("ddp", "zero3"), (3, 5)  # the steps each relaunch resumes from
# |Δ task loss| of the chain against the uninterrupted 2-process run: measured 1.4e-3 in both
# modes (2.1388 vs 2.1374), 2 % of the stage's decrease and a sixth of one step's. Not bitwise:
# the 1-process leg's steps average 128 samples, not 256, and the samples of each step after
# the switch are others (the same ones, dealt over other ranks and steps) — another trajectory.
ELASTIC_TOL = 3e-3
# |Δ| between DDP and ZeRO after 8 steps. ZeRO-2 reduce-scatters the gradients DDP all-reduces:
# measured 9e-8. ZeRO-3 also runs the backward on gathered copies: its gradients differ from
# DDP's by rounding (~1e-8), which Adam turns into a sizeable share of one lr step (4e-3)
# wherever a gradient is that small — the KD term, ~0 while the student is the teacher:
# measured 1.6e-4 with KD (6e-8 without), and bitwise the same with a replicated teacher.
MODE_TOL = {"zero2": 1e-6, "zero3": 1e-3}
# The teacher: 3 epochs of 9 steps per rank; a checkpoint every 4 steps and at epoch ends, so
# killed after step 15 it resumes from step 12, 3 batches into its second epoch.
TEACHER_SAVE, TEACHER_KILL_AT = "teacher.save_every=4", 15


def launch(mode: str, run_dir: Path, *args: str, nproc: int = 2, env: dict | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", f"configs/accelerate/{mode}.yaml",
           "--num_processes", str(nproc), "--mixed_precision", "no", "launch/train.py",
           "--config", "configs/blockwise.yaml", *DIST, f"train.teacher_mode={TEACHER[mode]}", *args,
           f"run_dir={run_dir}"]  # args win
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1", "NEUMETA_TRACE_DIR": str(run_dir / "trace"),
           **(env or {})}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(failure(f"{mode} launch", run_dir, out.stdout, out.stderr))
    return out


def failure(what: str, run_dir: Path, stdout: str, stderr: str) -> str:
    """The message of a failed launch: every rank's error lines (a tail alone can hold only the
    launcher's report of the rank that died second), the tail, and a file with all of it."""
    log = run_dir.parent / f"{run_dir.name}.failed.log"
    log.write_text(f"{stdout}\n--- stderr ---\n{stderr}")
    errors = [line for line in stderr.splitlines() if "Error" in line or "error:" in line]
    return f"{what} failed (whole output: {log}):\n" + "\n".join(errors[-40:]) + f"\n--- tail ---\n{stderr[-3000:]}"


def launch_machines(run_dir: Path, *args: str, env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """`launch/train.py args` as two machines × one process on localhost: each machine runs the
    command a 2-node SLURM job runs on its node (slurm.accelerate_command, the local CPU
    profile with `nodes: 2`), the main process at 127.0.0.1 on a free port."""
    from neumeta_dist.cluster.slurm import Rendezvous, accelerate_command, load_profile
    prof = dataclasses.replace(load_profile(ROOT / "slurm/local.yaml"), nodes=2)
    port = free_port()
    train_args = ["--config", "configs/blockwise.yaml", *args, *DIST, "train.teacher_mode=replicated", f"run_dir={run_dir}"]
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1", "NEUMETA_TRACE_DIR": str(run_dir / "trace"),
           **(env or {})}
    logs = run_dir / "machines" / str(len(list((run_dir / "machines").glob("*"))))  # one folder per launch
    logs.mkdir(parents=True)
    procs = []
    for rank in (0, 1):
        cmd = accelerate_command(prof, Rendezvous(2, rank, "127.0.0.1", port), train_args)
        # files, not pipes: a machine blocked on a full pipe would stall the other in a collective
        with open(logs / f"{rank}.out", "w") as out, open(logs / f"{rank}.err", "w") as err:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT))
    for proc in procs:
        try:
            proc.wait(timeout=600)
        finally:
            proc.kill()  # a no-op once it has ended
    return [subprocess.CompletedProcess(p.args, p.returncode, (logs / f"{r}.out").read_text(),
                                        (logs / f"{r}.err").read_text()) for r, p in enumerate(procs)]


class Runs:
    """Runs built on first use and shared by every test of the module."""

    def __init__(self, root: Path):
        self.root, self.cache = root, {}

    def get(self, kind: str, mode: str = "ddp"):
        if (kind, mode) not in self.cache:
            self.cache[kind, mode] = None  # a run that fails is reported once, by the first test using it
            self.cache[kind, mode] = getattr(self, kind)(mode)
        if self.cache[kind, mode] is None:
            pytest.fail(f"the shared {kind} run ({mode}) failed: see the first test that used it")
        return self.cache[kind, mode]

    def teacher(self, mode: str) -> Path:
        run = self.root / "teacher_run"
        launch(mode, run, "--stage", "0")
        return run / "teacher"

    def _fresh(self, name: str) -> Path:
        run = self.root / name
        shutil.copytree(self.get("teacher"), run / "teacher")
        return run

    def uninterrupted(self, mode: str) -> Path:
        run = self._fresh(f"whole_{mode}")
        launch(mode, run, "--stage", "1")
        return run

    def killed(self, mode: str) -> dict:
        """Stage 1 killed by SIGKILL after step KILL_AT: the checkpoints before it survive."""
        run = self._fresh(f"killed_{mode}")
        return {"run": run, "killed": launch(mode, run, "--stage", "1", check=False,
                                             env={"NEUMETA_SIGKILL_AT_STEP": str(KILL_AT[mode])})}

    def _copy(self, kind: str, mode: str, name: str) -> Path:
        run = self.root / name
        shutil.copytree(self.get(kind, mode)["run"], run)
        return run

    def resumed(self, mode: str) -> dict:
        """The killed run relaunched (DDP: with its newest checkpoint truncated; ZeRO-2: from a
        named, older checkpoint; ZeRO-3: the whole remaining plan, so stage 2 starts from ZeRO-3
        shards)."""
        run = self._copy("killed", mode, f"resumed_{mode}")
        out = {"run": run, "killed": self.get("killed", mode)["killed"]}
        sdir = run / "stage_1"
        if mode == "ddp":
            newest = sdir / "checkpoint_00000006" / "optimizer.bin"
            newest.write_bytes(newest.read_bytes()[:100])
            out["resume"] = launch(mode, run, "--stage", "1")
        elif mode == "zero2":
            out["resume"] = launch(mode, run, "--stage", "1", f"train.resume={sdir / 'checkpoint_00000003'}")
        else:
            out["resume"] = launch(mode, run)
        return out

    def elastic(self, mode: str) -> dict:
        """2 → 1 → 2: the killed 2-process run resumed from step ELASTIC_FROM[0] on 1 process,
        killed again after ELASTIC_FROM[1] (saving every step), then resumed on 2 processes to
        the end. Each launch traces into its own folder (its starting network included)."""
        run = self._copy("killed", mode, f"elastic_{mode}")
        first, second = ELASTIC_FROM
        for later in (run / "stage_1").glob("checkpoint_*"):
            if int(later.name.split("_")[1]) > first:
                shutil.rmtree(later)
        keep = "train.keep_checkpoints=9"  # every checkpoint the chain resumed from stays comparable
        one = launch(mode, run, "--stage", "1", "train.save_every=1", keep, nproc=1, check=False,
                     env={"NEUMETA_SIGKILL_AT_STEP": str(second), "NEUMETA_TRACE_DIR": str(run / "one")})
        two = launch(mode, run, "--stage", "1", keep, env={"NEUMETA_TRACE_DIR": str(run / "two")})
        return {"run": run, "one": one, "two": two}

    def teacher_killed(self, mode: str) -> dict:
        """Stage 0 killed after teacher step TEACHER_KILL_AT (mid-epoch)."""
        run = self.root / "teacher_killed"
        return {"run": run, "killed": launch(mode, run, "--stage", "0", TEACHER_SAVE, check=False,
                                             env={"NEUMETA_SIGKILL_AT_STEP": str(TEACHER_KILL_AT)})}

    def teacher_resumed(self, mode: str) -> dict:
        """The killed stage 0 relaunched on its 2 processes."""
        run = self._copy("teacher_killed", mode, "teacher_resumed")
        return {"run": run, "killed": self.get("teacher_killed", mode)["killed"],
                "resume": launch(mode, run, "--stage", "0", TEACHER_SAVE)}

    def teacher_elastic(self, mode: str) -> dict:
        """The killed stage 0 relaunched on 1 process (tracing into `one/`, keeping its checkpoints)."""
        run = self._copy("teacher_killed", mode, "teacher_elastic")
        return {"run": run, "resume": launch(mode, run, "--stage", "0", TEACHER_SAVE, "train.keep_checkpoints=20",
                                             nproc=1,
                                             env={"NEUMETA_TRACE_DIR": str(run / "one")})}

    def two_machines(self, mode: str) -> dict:
        """Stage 1 on two machines × one process: killed after step KILL_AT, relaunched on both."""
        run = self._fresh("two_machines")
        killed = launch_machines(run, "--stage", "1", env={"NEUMETA_SIGKILL_AT_STEP": str(KILL_AT["ddp"])})
        resume = launch_machines(run, "--stage", "1")
        for r in resume:
            if r.returncode != 0:
                raise AssertionError(failure("machine launch", run, r.stdout, r.stderr))
        return {"run": run, "killed": killed, "resume": resume}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("dist"))


def _final(run: Path, stage: int = 1) -> dict:
    return torch.load(run / f"stage_{stage}" / "final.pt", weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _trace(run: Path, rank: int, folder: str = "trace") -> dict[tuple[int, int, int], list[str]]:
    return read_trace(run / folder, rank)


def _task_loss(run: Path, state: dict) -> float:
    """Full-width cross-entropy of the network `state` generates, on 512 fixed training images."""
    import torch.nn.functional as F

    from neumeta_dist import checkpoint as ckpt
    from neumeta_dist.data import load_splits
    from neumeta_dist.recipe.stages import stage_plan
    from neumeta_dist.training.context import family_from_config
    from neumeta_dist.training.trained import build_net

    cfg = load_config(run / "config.yaml")
    splits = load_splits(cfg.data, cfg.train.seed)
    family = family_from_config(cfg, splits)
    net = build_net(cfg, family, ckpt.load_torch(run / "teacher" / "reference.pt", "reference")["weights"])
    net.load_state_dict(state)
    net.activate(stage_plan(cfg, family)[0].layers)
    x, y = (t[:512] for t in splits.train.tensors)
    with torch.no_grad():
        return F.cross_entropy(net.eval()(x, 1.0)[0], y).item()


@pytest.mark.parametrize("mode", MODES)
def test_stage_training_lowers_the_loss(runs, mode):
    run = runs.get("uninterrupted", mode)
    start = torch.load(run / "trace" / "start_rank0_stage1.pt", weights_only=True)
    before, after = _task_loss(run, start), _task_loss(run, _final(run)["model"])
    assert after < 0.98 * before, (before, after)  # measured: 2.199 -> 2.137 in every mode


@pytest.mark.parametrize("mode", MODES)
def test_every_rank_ends_with_the_same_whole_network(runs, mode):
    run = runs.get("uninterrupted", mode)
    r0, r1 = (torch.load(run / "trace" / f"final_rank{r}_stage1.pt", weights_only=True) for r in (0, 1))
    final = _final(run)
    # (rank 0's dump and final.pt are written from one dict: comparing them would test nothing)
    assert _max_diff(r0["model"], r1["model"]) == 0
    assert _max_diff(r0["ema"]["shadow"], r1["ema"]["shadow"]) == 0
    total = sum(v.numel() for v in final["model"].values())
    if mode == "zero3":  # each rank stores only its partition of every parameter
        assert r0["local_numel"] + r1["local_numel"] >= total and max(r0["local_numel"], r1["local_numel"]) < 0.6 * total
    else:
        assert r0["local_numel"] == r1["local_numel"] == total


@pytest.mark.parametrize("mode", ["zero2", "zero3"])
def test_zero_trains_the_same_network_as_ddp(runs, mode):
    """Same maths, other placement (ZeRO-3: a sharded KD teacher too): equal to rounding."""
    ddp, zero = _final(runs.get("uninterrupted", "ddp")), _final(runs.get("uninterrupted", mode))
    assert _max_diff(ddp["model"], zero["model"]) < MODE_TOL[mode]


@pytest.mark.parametrize("mode", MODES)
def test_run_killed_mid_stage_resumes_to_the_uninterrupted_weights(runs, mode):
    resumed = runs.get("resumed", mode)
    assert resumed["killed"].returncode != 0 and "SIGKILL" in resumed["killed"].stderr
    a, b = _final(runs.get("uninterrupted", mode)), _final(resumed["run"])
    diff = max(_max_diff(a["model"], b["model"]), _max_diff(a["ema"]["shadow"], b["ema"]["shadow"]))
    assert diff == 0.0, diff  # bitwise on CPU in every mode (gloo reductions are deterministic)


@pytest.mark.parametrize("mode", MODES)
def test_resumed_run_repeats_and_skips_no_sample(runs, mode):
    """Per rank, the last record of every (step, micro-batch) equals the uninterrupted run's;
    across ranks, no image comes twice within an epoch."""
    whole, resumed = runs.get("uninterrupted", mode), runs.get("resumed", mode)["run"]
    per_epoch = None
    for rank in (0, 1):
        a = {k: v for k, v in _trace(whole, rank).items() if k[0] == 1}
        b = {k: v for k, v in _trace(resumed, rank).items() if k[0] == 1}
        assert a == b
        per_epoch = per_epoch or _batches_per_epoch(whole)
    for epoch_start in range(0, 16, per_epoch):
        seen = Counter(f for rank in (0, 1) for (s, step, micro), prints in _trace(whole, rank).items()
                       if s == 1 and epoch_start <= 2 * step + micro < epoch_start + per_epoch for f in prints)
        assert seen and max(seen.values()) == 1


def _batches_per_epoch(run: Path) -> int:
    meta = json.loads((run / "stage_1" / "checkpoint_00000008" / "meta.json").read_text())
    assert meta["data"]["micro_batches"] == 8 * 2
    return meta["data"]["batches_per_epoch"]


def test_truncated_newest_checkpoint_is_skipped_with_a_warning(runs):
    err = runs.get("resumed", "ddp")["resume"].stderr
    assert "skipping checkpoint" in err and "checkpoint_00000006" in err and "optimizer.bin" in err
    assert "resuming stage_1 from checkpoint_00000003" in runs.get("resumed", "ddp")["resume"].stdout


def _scalars(tb: Path, tag: str) -> list[float]:
    """A TensorBoard scalar's values in step order (every launch's event file of `tb`)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(tb))
    ea.Reload()
    return [e.value for e in sorted(ea.Scalars(tag), key=lambda e: e.step)]


def _sequence(run: Path, world: int, steps: range, folder: str = "trace") -> list[str]:
    """Stage 1's images of `steps` in the order of the epoch's positions: micro-batch by
    micro-batch, rank by rank (rank r's k-th batch is the epoch's batch k × world + r)."""
    traces = [_trace(run, rank, folder) for rank in range(world)]
    return [f for step in steps for micro in range(2) for t in traces for f in t[(1, step, micro)]]


@pytest.mark.parametrize("mode", ELASTIC_MODES)
def test_stage_resumes_on_another_number_of_processes(runs, mode):
    """2 → 1, then 1 → 2: each relaunch starts from exactly the network its checkpoint holds
    (under ZeRO-3 through DeepSpeed's universal checkpoint) and the stage ends at the loss of
    the uninterrupted 2-process run, to ELASTIC_TOL."""
    from neumeta_dist.distributed.consolidate import model_state
    chain, (first, second) = runs.get("elastic", mode), ELASTIC_FROM
    run = chain["run"]
    assert f"resuming stage_1 from checkpoint_{first:08d} (step {first}, world size 2 → 1)" in chain["one"].stdout
    assert chain["one"].returncode != 0 and "SIGKILL" in chain["one"].stderr
    assert f"resuming stage_1 from checkpoint_{second:08d} (step {second}, world size 1 → 2)" in chain["two"].stdout
    for leg, step, world in (("one", first, 1), ("two", second, 2)):
        saved = model_state(run / "stage_1" / f"checkpoint_{step:08d}")
        for rank in range(world):
            assert _max_diff(saved, torch.load(run / leg / f"start_rank{rank}_stage1.pt", weights_only=True)) == 0
    whole = runs.get("uninterrupted", mode)
    a, b = _task_loss(whole, _final(whole)["model"]), _task_loss(run, _final(run)["model"])
    assert abs(a - b) < ELASTIC_TOL, f"task loss {b:.6f} after 2 → 1 → 2, uninterrupted {a:.6f}"


@pytest.mark.parametrize("mode", ELASTIC_MODES)
def test_elastic_chain_trains_the_uninterrupted_samples_each_once(runs, mode):
    """Across 2 → 1 → 2 the stage trains the samples of the uninterrupted 2-process run, in its
    order, as far as the chain goes (it trains fewer: one leg has half the ranks): within an
    epoch none is repeated and none skipped."""
    chain, (first, second) = runs.get("elastic", mode), ELASTIC_FROM
    run = chain["run"]
    trained = (_sequence(run, 2, range(first)) + _sequence(run, 1, range(first, second), "one")
               + _sequence(run, 2, range(second, 8), "two"))
    whole = _sequence(runs.get("uninterrupted", mode), 2, range(8))
    assert len(trained) == 2 * 64 * (2 * first + (second - first) + 2 * (8 - second))
    assert trained == whole[:len(trained)]


def test_zero3_resumes_on_another_number_of_processes_as_ddp_does(runs):
    """DeepSpeed's universal checkpoint carries the whole optimiser state: the ZeRO-3 chain ends
    where the DDP chain does, to MODE_TOL (measured 4.6e-4, as for uninterrupted runs; before
    distributed/universal.py's repairs of DeepSpeed's ZeRO-3 loader, 5e-3)."""
    ddp, zero = (_final(runs.get("elastic", mode)["run"]) for mode in ("ddp", "zero3"))
    assert _max_diff(ddp["model"], zero["model"]) < MODE_TOL["zero3"]


def test_named_checkpoint_is_resumed_over_a_newer_one(runs):
    out = runs.get("resumed", "zero2")["resume"].stdout
    assert "resuming stage_1 from checkpoint_00000003" in out


def test_next_stage_starts_from_zero3_shards_of_the_previous_one(runs):
    """Stage 2, after ZeRO-3 partitioned and re-gathered it, holds stage 1's selected network:
    every head of stage 1's layers, α and the classifier (its new heads are initialised anew)."""
    from neumeta_dist import checkpoint as ckpt
    from neumeta_dist.training.context import RunContext
    from neumeta_dist.training.trained import load_trained

    run = runs.get("resumed", "zero3")["run"]
    assert (run / "stage_2" / "COMPLETE").is_file()
    assert json.loads((run / "results.json").read_text())["stages_completed"] == 2
    cfg = load_config(run / "config.yaml")
    reference = ckpt.load_torch(run / "teacher" / "reference.pt", "reference")
    prev = load_trained(RunContext.load(cfg).with_teacher(None, reference), 1)
    heads = torch.tensor(sorted({prev.head_of(n) for n in prev.generated_names()}))
    for rank in (0, 1):
        start = torch.load(run / "trace" / f"start_rank{rank}_stage2.pt", weights_only=True)
        assert start.keys() == prev.state_dict().keys()
        for name, value in prev.state_dict().items():
            if name.startswith("inr."):
                axis = 1 if name == "inr.res_scale" else 0
                value, start[name] = value.index_select(axis, heads), start[name].index_select(axis, heads)
            assert torch.equal(value, start[name]), name


@pytest.mark.parametrize("mode", MODES)
def test_consolidated_last_checkpoint_equals_the_stage_result(runs, mode):
    from neumeta_dist.distributed.consolidate import consolidate

    run = runs.get("uninterrupted", mode)
    plain, final = consolidate(run / "stage_1" / "checkpoint_00000008"), _final(run)
    assert plain["stage"] == 1 and plain["steps"] == 8 and plain["source"]["world_size"] == 2
    assert _max_diff(plain["model"], final["model"]) == 0
    assert _max_diff(plain["ema"]["shadow"], final["ema"]["shadow"]) == 0


def test_eval_and_export_read_a_consolidated_zero3_checkpoint(runs, tmp_path):
    run = runs.get("uninterrupted", "zero3")
    env = {**os.environ, "NEUMETA_NO_BAR": "1"}
    cli = lambda *a: subprocess.run([str(BIN / "neumeta-dist"), *a], capture_output=True, text=True, env=env,
                                    cwd=ROOT, timeout=300)
    out = cli("consolidate", "--ckpt", str(run / "stage_1" / "checkpoint_00000006"), "--out", str(tmp_path / "c.pt"))
    assert out.returncode == 0, out.stderr
    assert "zero3 × 2" in out.stdout
    out = cli("export", "--run", str(run), "--ckpt", str(tmp_path / "c.pt"), "--width", "0.5",
              "--out", str(tmp_path / "net.pt"))
    assert out.returncode == 0, out.stderr
    out = cli("eval", "--run", str(run), "--ckpt", str(tmp_path / "c.pt"), "--widths", "0.5,1.0")
    assert out.returncode == 0, out.stderr
    rows = json.loads((run / "results.json").read_text())["widths"]  # the merged view: this evaluation's rows
    assert [w["width"] for w in rows if w["evaluation"]["network"].startswith("ckpt:")] == [0.5, 1.0]


def test_teacher_killed_mid_epoch_resumes_to_the_uninterrupted_teacher(runs):
    """Stage 0 checkpoints like a stage: killed by SIGKILL mid-epoch and relaunched, the teacher
    is bitwise the uninterrupted one (and scores the same); each rank's batches, last record
    per step, are the uninterrupted run's: the resumed epoch repeats and skips none."""
    resumed, whole = runs.get("teacher_resumed"), runs.get("teacher")
    assert resumed["killed"].returncode != 0 and "SIGKILL" in resumed["killed"].stderr
    assert "resuming teacher from checkpoint_00000012 (step 12)" in resumed["resume"].stdout
    a, b = (torch.load(d / "teacher.pt", weights_only=True) for d in (whole, resumed["run"] / "teacher"))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["accuracy"] == b["accuracy"]
    meta = json.loads((resumed["run"] / "teacher" / "checkpoint_00000027" / "meta.json").read_text())
    per_epoch = meta["data"]["batches_per_epoch"]
    assert per_epoch == 9 and meta["data"]["epoch"] == 3 and meta["world_size"] == 2
    for rank in (0, 1):
        assert ({k: v for k, v in _trace(whole.parent, rank).items() if k[0] == 0}
                == {k: v for k, v in _trace(resumed["run"], rank).items() if k[0] == 0})
    for epoch in range(3):
        seen = Counter(f for rank in (0, 1) for (s, step, _), prints in _trace(resumed["run"], rank).items()
                       if s == 0 and step // per_epoch == epoch for f in prints)
        assert sum(seen.values()) == 2 * per_epoch * 64 and max(seen.values()) == 1


def test_teacher_resumes_on_another_number_of_processes(runs):
    """Stage 0 killed on 2 processes (3 batches into its second epoch) and relaunched on 1: the
    rest of that epoch is the uninterrupted run's order dealt to one rank — no sample repeated
    or skipped — the cosine continues from the samples trained and ends at 0, and the teacher
    scores within 2 points of the uninterrupted one (another trajectory: batches of 64, not 128)."""
    chain, whole = runs.get("teacher_elastic"), runs.get("teacher")
    out = chain["resume"].stdout
    assert "resuming teacher from checkpoint_00000012 (step 12, world size 2 → 1)" in out
    run = chain["run"]
    metas = {int(m.parent.name.split("_")[1]): json.loads(m.read_text())
             for m in (run / "teacher").glob("checkpoint_*/meta.json")}
    second_end = next(step for step, m in metas.items() if m["world_size"] == 1 and m["data"]["epoch"] == 2
                      and m["data"]["consumed"] == 0)
    before = [f for step in range(9, 12) for rank in (0, 1) for f in _trace(run, rank)[0, step, 0]]
    after = [f for step in range(12, second_end) for f in _trace(run, 0, "one")[0, step, 0]]
    uninterrupted = [f for step in range(9, 18) for rank in (0, 1) for f in _trace(whole.parent, rank)[0, step, 0]]
    n = len(before + after)
    assert len(set(before + after)) == n and n > len(uninterrupted) - 2 * 64
    assert (before + after)[:len(uninterrupted)] == uninterrupted[:n]
    events = _scalars(run / "tb" / "teacher", "teacher/lr")
    assert events[-1] < 1e-3 * events[0]
    a, b = (torch.load(d / "teacher.pt", weights_only=True)["accuracy"] for d in (whole, run / "teacher"))
    assert abs(a - b) < 0.02, (a, b)


def test_two_machines_resume_to_the_single_machine_weights(runs):
    """Stage 1 as two machines × one process (the 2-node SLURM job's command, on localhost):
    one process group of 2 ranks, killed by SIGKILL mid-stage and relaunched on both machines,
    ends bitwise equal to the 2-process run on one machine, having consumed the same batches.
    It resumes from step 6, after its first epoch end (9 batches per rank, 2 per step)."""
    two, one = runs.get("two_machines"), runs.get("uninterrupted", "ddp")
    assert all(k.returncode != 0 for k in two["killed"]) and "SIGKILL" in two["killed"][0].stderr
    assert "resuming stage_1 from checkpoint_00000006" in two["resume"][0].stdout
    assert json.loads((two["run"] / "stage_1" / "checkpoint_00000008" / "meta.json").read_text())["world_size"] == 2
    a, b = _final(one), _final(two["run"])
    assert _max_diff(a["model"], b["model"]) == 0.0
    assert _max_diff(a["ema"]["shadow"], b["ema"]["shadow"]) == 0.0
    for rank in (0, 1):
        assert ({k: v for k, v in _trace(one, rank).items() if k[0] == 1}
                == {k: v for k, v in _trace(two["run"], rank).items() if k[0] == 1})
