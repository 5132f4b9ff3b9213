"""The stage's checkpoint policy: where a stage resumes from, what a checkpoint holds, when
old ones go, and which checkpoints a run may resume at all (torchtitan's Checkpointer is the
model: the training loop asks it, and knows nothing of the files).

The files themselves (atomic writes, manifests, truncation checks) are checkpoint.py's.

**Elastic resume.** A stage checkpointed on N processes resumes on M: the model, optimiser, EMA
and scheduler states are whole (DDP) or made whole by DeepSpeed's universal checkpoint
(ZeRO-2/3, distributed/universal.py), and the data position is recorded as the positions of
the epoch already trained and the (world size, batches per rank) legs that trained them, which
the M ranks deal the rest of the epoch from (data/position.py). For in-memory data they are a
prefix of the epoch's order; a WebDataset stream recomputes its consumed set from the legs by
replaying the old workers' shuffle buffers on positions (data/stream.py `untrained`), mid-epoch
too. What still refuses a checkpoint: another config digest and another parallel mode (DDP and
one process are one mode; ZeRO-2, ZeRO-3 others). The teacher's cosine follows the data
position, so stage 0 is elastic as well (training/teacher.py).
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

from .. import checkpoint as ckpt
from ..config import Config
from ..data.position import DataPosition
from ..distributed import data_parallel as parallel
from ..distributed import universal
from ..run import FINAL, RunDir
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
        self.meta: dict = {}

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
        self._prepare_load()
        return self.resume_from

    @property
    def resizes(self) -> bool:
        """The resume point was written by another number of processes."""
        return self.resume_from is not None and self.meta["world_size"] != self.accelerator.num_processes

    @property
    def resume_position(self) -> DataPosition | None:
        """Where the data stream continues (None: no resume point, or one from before positions
        were recorded, whose step says it for the world size that wrote it)."""
        data = self.meta.get("data", {})
        if "consumed" not in data:
            return None
        return DataPosition(data["epoch"], data["consumed"], tuple(map(tuple, data.get("legs", self._one_leg(data)))))

    def _one_leg(self, data: dict) -> list[list[int]]:
        """The legs of a checkpoint written before they were recorded: its epoch so far, on its own world size."""
        world = self.meta["world_size"]
        taken = data["consumed"] // (world * data.get("batch_size", self.cfg.data.batch_size))
        return [[world, taken]] if taken else []

    def _prepare_load(self) -> None:
        """Before the models are prepared: refuse an unusable resume point early, and tell
        DeepSpeed whether it loads its own shards or (another world size) a universal checkpoint."""
        acc = self.accelerator
        self.meta = ckpt.read_meta(self.resume_from) if self.resume_from is not None else {}
        if self.resume_from is not None:
            self._check_compatible(self.resume_from, self.meta)
        zero = parallel.zero_stage(acc) > 0
        parallel.load_universal(acc, zero and self.resizes)
        if zero and self.resizes:
            if acc.is_main_process:
                universal.convert(self.resume_from)
            acc.wait_for_everyone()

    @property
    def resume_step(self) -> int:
        """The optimiser step the resume point was written after (0 without one): where the data
        stream continues, known before anything is loaded."""
        return self.meta["step"] if self.resume_from is not None else 0

    def resume(self, sched, ema=None) -> int:
        """Load the resume point into the prepared objects; returns the step to continue from
        (0 when there is none)."""
        if self.resume_from is None:
            return 0
        latest, acc, meta = self.resume_from, self.accelerator, self.meta
        universal_load = self.resizes and parallel.zero_stage(acc) > 0
        built = universal.hyperparameters(sched.optimizer) if universal_load else []
        try:
            acc.load_state(str(universal.folder(latest) if universal_load else latest))
        except Exception as e:  # a shard that passed the manifest but does not load
            raise ckpt.CheckpointError(f"{latest} does not load ({type(e).__name__}: {e}); delete it to resume "
                                       "from the one before") from None
        if ema is not None:
            ema.load_state_dict(ckpt.load_torch(latest / "ema.pt", "EMA state"))
        sched.load_state_dict(ckpt.load_torch(latest / "sched.pt", "scheduler state"))
        if universal_load:
            universal.restore_groups(sched.optimizer, built, sched.get_last_lr())
        if self.resizes:
            self._reseed(meta["step"])
        if acc.is_main_process:
            resized = f", world size {meta['world_size']} → {acc.num_processes}" if self.resizes else ""
            print(f"resuming {latest.parent.name} from {latest.name} (step {meta['step']}{resized})", flush=True)
        return meta["step"]

    def _reseed(self, step: int) -> None:
        """Global RNGs on a new world size. load_state restores rank r's saved state on ranks
        r < N and leaves the others as they started; instead every rank draws from (seed, step,
        rank). No result depends on them (a step's widths, noise and data are stateless); this
        only makes them well-defined. The accumulation counter is rank 0's, as on any resume."""
        from accelerate.utils import set_seed
        acc = self.accelerator
        set_seed(random.Random(f"{self.cfg.train.seed}/{step}/{acc.process_index}/resume").getrandbits(32))
        acc.step = step * self.micro_batches

    def _check_compatible(self, latest: Path, meta: dict) -> None:
        acc, mode = self.accelerator, parallel.mode(self.accelerator)
        if meta["config_digest"] != self.cfg.digest():
            raise ckpt.CheckpointError(f"{latest} was written by a different config; resume with the same "
                                       f"config or use a new run_dir")
        if _replication(meta.get("mode", mode)) != _replication(mode):
            raise ckpt.CheckpointError(f"{latest} was written under {meta['mode']}, this run is "
                                       f"{mode}: relaunch with the same accelerate config")
        if meta["world_size"] != acc.num_processes and (why := self._fixed_world(meta)):
            raise ckpt.CheckpointError(f"{latest} was written by {meta['world_size']} processes, this run has "
                                       f"{acc.num_processes}, and {why}: relaunch with --num_processes "
                                       f"{meta['world_size']}")

    def _fixed_world(self, meta: dict) -> str | None:
        """Why this resume point resumes only on the world size that wrote it (None: it need not)."""
        data = meta.get("data", {})
        if "consumed" not in data:
            return "it records no data position (written before elastic resume)"
        return None

    def save(self, step: int, sched, ema, data) -> None:
        """A whole checkpoint after optimiser step `step` (+ EMA if any, scheduler and the data
        position of `data`, the training batches); then only the newest `train.keep_checkpoints` stay."""
        cfg, acc, pos = self.cfg, self.accelerator, data.position
        meta = {"config_digest": cfg.digest(), "world_size": acc.num_processes,
                "mode": parallel.mode(acc),
                "data": {"micro_batches": step * self.micro_batches, "epoch": pos.epoch, "consumed": pos.consumed,
                         "legs": [list(leg) for leg in pos.legs],
                         "batches_per_epoch": data.per_epoch, "batch_size": cfg.data.batch_size}}
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


def _replication(mode: str) -> str:
    """DDP on one process is the single-process mode: the same whole states."""
    return "ddp" if mode == "single" else mode
