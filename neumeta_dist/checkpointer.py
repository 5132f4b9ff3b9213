"""The stage's checkpoint policy: where a stage resumes from, what a checkpoint holds, when
old ones go, and which checkpoints a run may resume at all (torchtitan's Checkpointer is the
model: the training loop asks it, and knows nothing of the files).

The files themselves (atomic writes, manifests, truncation checks) are checkpoint.py's.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from . import checkpoint as ckpt
from .distributed import data_parallel as parallel
from .config import Config
from .run import FINAL, RunDir
from .selection import Selection


class Checkpointer:
    """Save and resume of one stage directory for one accelerator.

    An INR stage checkpoints its scheduler and EMA beside the accelerator state, and steps of
    `train.widths_per_step` micro-batches; the teacher's training (stage 0, `teacher/`) has no
    EMA and steps of one batch (`micro_batches=1`).
    """

    def __init__(self, cfg: Config, accelerator, stage_dir: Path, micro_batches: int | None = None):
        self.cfg, self.accelerator, self.dir = cfg, accelerator, Path(stage_dir)
        self.micro_batches = cfg.train.widths_per_step if micro_batches is None else micro_batches
        self.resume_from: Path | None = None

    def find_resume_point(self) -> Path | None:
        """The checkpoint this stage resumes from (`train.resume`), or None to start it afresh.

        `none` deletes the stage's earlier checkpoints, so that a later `auto` cannot pick one of
        them over the new run's; a named checkpoint applies to its own stage only.
        """
        how, acc = self.cfg.train.resume, self.accelerator
        if how == "none":
            if acc.is_main_process:
                if ckpt.checkpoints(self.dir):
                    print(f"train.resume=none: deleting the checkpoints of {self.dir}")
                for old in ckpt.checkpoints(self.dir):
                    shutil.rmtree(old)
                Selection.forget(self.dir)
            acc.wait_for_everyone()
            self.resume_from = None
        elif how != "auto" and Path(how).resolve().parent == self.dir.resolve():
            self.resume_from = ckpt.named_checkpoint(Path(how))
        else:
            self.resume_from = ckpt.latest_checkpoint(self.dir)
        return self.resume_from

    @property
    def resume_step(self) -> int:
        """The optimiser step the resume point was written after (0 without one): where the data
        stream continues, known before anything is loaded."""
        return ckpt.read_meta(self.resume_from)["step"] if self.resume_from is not None else 0

    def resume(self, sched, ema=None) -> int:
        """Load the resume point into the prepared objects; returns the step to continue from
        (0 when there is none)."""
        if self.resume_from is None:
            return 0
        latest, acc = self.resume_from, self.accelerator
        meta = ckpt.read_meta(latest)
        self._check_compatible(latest, meta)
        try:
            acc.load_state(str(latest))
        except Exception as e:  # a shard that passed the manifest but does not load
            raise ckpt.CheckpointError(f"{latest} does not load ({type(e).__name__}: {e}); delete it to resume "
                                       "from the one before") from None
        if ema is not None:
            ema.load_state_dict(ckpt.load_torch(latest / "ema.pt", "EMA state"))
        sched.load_state_dict(ckpt.load_torch(latest / "sched.pt", "scheduler state"))
        if acc.is_main_process:
            print(f"resuming {latest.parent.name} from {latest.name} (step {meta['step']})", flush=True)
        return meta["step"]

    def _check_compatible(self, latest: Path, meta: dict) -> None:
        acc, mode = self.accelerator, parallel.mode(self.accelerator)
        if meta["config_digest"] != self.cfg.digest():
            raise ckpt.CheckpointError(f"{latest} was written by a different config; resume with the same "
                                       f"config or use a new run_dir")
        if meta["world_size"] != acc.num_processes:
            # The data position is counted in per-rank batches and ZeRO shards are per rank:
            # neither maps onto another world size without resharding.
            raise ckpt.CheckpointError(f"{latest} was written by {meta['world_size']} processes, this run has "
                                       f"{acc.num_processes}: relaunch with --num_processes {meta['world_size']} "
                                       f"(or `neumeta-dist consolidate` it and start a new run from the file)")
        if meta.get("mode", mode) != mode:
            raise ckpt.CheckpointError(f"{latest} was written under {meta['mode']}, this run is "
                                       f"{mode}: relaunch with the same accelerate config")

    def save(self, step: int, sched, ema, batches_per_epoch: int) -> None:
        """A whole checkpoint after optimiser step `step` (+ EMA if any, scheduler and data
        position); then only the newest `train.keep_checkpoints` stay."""
        cfg, acc = self.cfg, self.accelerator
        micro = step * self.micro_batches
        meta = {"config_digest": cfg.digest(), "world_size": acc.num_processes,
                "mode": parallel.mode(acc),
                "data": {"micro_batches": micro, "epoch": micro // batches_per_epoch,
                         "batches_per_epoch": batches_per_epoch, "batch_size": cfg.data.batch_size}}
        extra = {"sched": sched.state_dict(), **({"ema": ema.state_dict(cpu=True)} if ema is not None else {})}
        ckpt.save_state(acc, self.dir, step, meta, extra)
        if acc.is_main_process:
            ckpt.prune(self.dir, cfg.train.keep_checkpoints)

    def finish(self, final: dict, info: dict) -> None:
        """The stage's result, then its COMPLETE marker (last: a reader trusts the marker)."""
        if self.accelerator.is_main_process:
            ckpt.atomic_torch_save(final, self.dir / FINAL)
            ckpt.mark_complete(self.dir, info)
        self.accelerator.wait_for_everyone()

    @staticmethod
    def check_resume_target(cfg: Config, n_stages: int) -> None:
        """A named `train.resume` must be a whole checkpoint of one of this run's stages (fail early)."""
        how = cfg.train.resume
        if how in ("auto", "none"):
            return
        path = ckpt.named_checkpoint(Path(how))
        run = RunDir(Path(cfg.run_dir))
        if path.resolve().parent not in {run.checkpoints(k).resolve() for k in range(0, n_stages + 1)}:
            raise ckpt.CheckpointError(f"train.resume={how}: not a checkpoint of {cfg.run_dir} (expected "
                                       f"{cfg.run_dir}/stage_<k>/checkpoint_<step> or "
                                       f"{cfg.run_dir}/teacher/checkpoint_<step>)")
