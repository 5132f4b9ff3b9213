"""What every command of a run shares once its data and family are loaded (`RunContext`).

The run directory's layout and markers are run.py's, torch-free; this is the torch side: the
splits, the family built from the config and the data's shape, the stage plan, the teacher.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..config import Config
from ..data import Splits, load_splits
from ..models.family import Family
from ..models.norms import norm_strategy
from ..models.registry import build_family
from ..recipe.stages import Stage, stage_plan
from ..run import RunDir


def family_from_config(cfg: Config, splits: Splits) -> Family:
    m = cfg.model
    return build_family(m.family, m.width, tuple(m.channels) or None, splits.in_channels, splits.num_classes,
                        norm_strategy(cfg.meta.norm).family_norm)


@dataclass(frozen=True)
class RunContext:
    """What every command of a run needs, built once by `load`: the config, the data splits,
    the model family, the stage plan, and (once stage 0 produced or found them) the teacher
    artefact and the reference weights."""

    cfg: Config
    splits: Splits
    family: Family
    stages: tuple[Stage, ...]
    teacher: dict | None = None  # teacher.pt: state dict, family, accuracy, params
    reference: dict | None = None  # reference.pt: folded (+ smoothed) weights, permutations, TV

    @property
    def run(self) -> RunDir:
        return RunDir(Path(self.cfg.run_dir))

    @classmethod
    def load(cls, cfg: Config) -> "RunContext":
        """Splits, family and plan of `cfg` (teacher and reference are added by `with_teacher`)."""
        splits = load_splits(cfg.data, cfg.train.seed)
        family = family_from_config(cfg, splits)
        return cls(cfg, splits, family, stage_plan(cfg, family))

    def with_teacher(self, teacher: dict | None, reference: dict | None) -> "RunContext":
        return replace(self, teacher=teacher, reference=reference)

    def stage_dir(self, k: int) -> Path:
        return self.run.stage(k)

    def completed_stages(self) -> int:
        return self.run.completed_stages(len(self.stages))
