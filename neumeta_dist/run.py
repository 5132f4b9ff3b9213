"""A run directory: the one place that spells out its paths and markers.

Layout of `<run_dir>/` (README, docs/architecture.md):

    config.yaml                   the resolved config, written when training starts
    teacher/checkpoint_<step>/    stage 0 while the teacher trains: atomic checkpoints, as a stage's
    teacher/teacher.pt            stage 0: the BN teacher (state dict, family, test accuracy)
    teacher/reference.pt          stage 0: folded (+ smoothed) weights; stage 0 ends with it
    teacher/COMPLETE              stage 0's record: the keys, digest and commit that made it (records/lineage.py)
    stage_<k>/checkpoint_<step>/  atomic checkpoints (checkpoint.py), newest whole one wins
    stage_<k>/best.pt             the best held-out candidate so far (training/selection.py)
    stage_<k>/final.pt            the stage's result, written before
    stage_<k>/COMPLETE            the marker, written last; records what made the stage (records/lineage.py)
    evaluations/<time>-<id>.json  one file per evaluation (records/evaluations.py), never rewritten
    results.json, results.md, accuracy_vs_compression.png   their merged view
    calibration.pt                the sweep's recalibration of every network: no data needed after it
    tb/<name>/                    TensorBoard scalars (teacher, stage_<k>, eval)
    slurm/jobs.json               the SLURM chain's state (cluster/submit.py)
    slurm/snapshots/<time>-<sha>/ the code + resolved config a submission's jobs run (cluster/snapshot.py)
    individual.json               the per-width baseline (baselines/individual.py)
    slimmable.pt                  the slimmable baseline's network (baselines/slimmable.py)

Torch-free (cluster/slurm.py and cluster/submit.py run it on login nodes and in Submitit's unpickler); what a
run's commands share once its data and family are loaded is training/context.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

COMPLETE = "COMPLETE"
META = "meta.json"
FINAL = "final.pt"
BEST = "best.pt"
CHECKPOINT_GLOB = "checkpoint_*"
_STAGE = re.compile(r"stage_(\d+)")


def checkpoint_dir(stage_dir: Path, step: int, tmp: bool = False) -> Path:
    """`checkpoint_<step>` (zero-padded so names sort as steps do); `tmp`: the name it is
    written under before the atomic rename."""
    return Path(stage_dir) / f"{'.tmp_' if tmp else ''}checkpoint_{step:08d}"


def stage_index(stage_dir: Path) -> int | None:
    """k of a `stage_<k>` directory, None for any other name."""
    m = _STAGE.fullmatch(Path(stage_dir).name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class RunDir:
    """Every path and marker of one run directory."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of_checkpoint(cls, ckpt: Path) -> "RunDir":
        """The run holding `<run>/stage_<k>/checkpoint_<step>`."""
        return cls(Path(ckpt).parent.parent)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def teacher_dir(self) -> Path:
        return self.root / "teacher"

    @property
    def teacher(self) -> Path:
        return self.teacher_dir / "teacher.pt"

    @property
    def reference(self) -> Path:
        return self.teacher_dir / "reference.pt"

    def stage(self, k: int) -> Path:
        return self.root / f"stage_{k}"

    def checkpoints(self, k: int) -> Path:
        """Where stage k writes its `checkpoint_<step>/` directories: `teacher/` for stage 0
        (the teacher's training), `stage_<k>/` after."""
        return self.teacher_dir if k == 0 else self.stage(k)

    def final(self, k: int) -> Path:
        return self.stage(k) / FINAL

    def tb(self, name: str) -> Path:
        return self.root / "tb" / name

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def calibration(self) -> Path:
        """The evaluated networks' recalibration, stored by the sweep (evaluation/calibration.py)."""
        return self.root / "calibration.pt"

    @property
    def results_md(self) -> Path:
        return self.root / "results.md"

    @property
    def plot(self) -> Path:
        return self.root / "accuracy_vs_compression.png"

    @property
    def plot_macs(self) -> Path:
        """The same curve against MACs per image (written when every row records them)."""
        return self.root / "accuracy_vs_macs.png"

    @property
    def slurm_dir(self) -> Path:
        return self.root / "slurm"

    @property
    def jobs(self) -> Path:
        return self.slurm_dir / "jobs.json"

    @property
    def individual(self) -> Path:
        return self.root / "individual.json"

    @property
    def slimmable(self) -> Path:
        """The slimmable baseline's trained network (baselines/slimmable.py)."""
        return self.root / "slimmable.pt"

    def stage_complete(self, k: int) -> bool:
        """Stage 0 (teacher + smoothing) ends with reference.pt, an INR stage with COMPLETE."""
        return (self.reference if k == 0 else self.stage(k) / COMPLETE).is_file()

    def stage_input(self, k: int) -> Path:
        """What stage k starts from: the smoothed teacher for stage 1, stage k−1's result after."""
        return self.reference if k == 1 else self.final(k - 1)

    def completed_stages(self, n_stages: int) -> int:
        """How many INR stages, counted from the first, are COMPLETE."""
        n = 0
        while n < n_stages and self.stage_complete(n + 1):
            n += 1
        return n


class StageError(RuntimeError):
    """A stage asked for out of order (its predecessor is not complete) or outside the plan."""
