"""The library face: a finished run as one object, and training from a script.

    import neumeta_dist as nd
    run = nd.load("runs/demo")
    net = run.network(width=0.6)          # a plain nn.Module: the network the evaluation scored
    run.export("net.onnx", width=0.6)     # or max_params= / max_macs=

`load` reads the run directory only (config, teacher family and reference, the last complete
stage's final.pt, and the evaluation's calibration.pt, results.json): no dataset. A run
evaluated before calibration.pt existed still loads; its recalibrated widths, image size and
MACs then come from the training data, loaded on first need, with an error that says so when
it is absent. The CLI's `eval` and `export` are thin shells over this class.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import torch

from . import checkpoint as ckpt
from .config import Config, load_config
from .core.metamorphic import MetamorphicNet
from .evaluation.budget import WidthCost
from .evaluation.calibration import Calibration, MissingCalibration
from .evaluation.export import FORMATS, PlainNet, materialise, write
from .models import zoo
from .models.registry import family_from_dict
from .recipe.stages import stage_plan
from .run import RunDir
from .training.context import RunContext


@dataclass(frozen=True)
class WidthResult:
    """One evaluated width of results.json: what it is to training and what it scored."""

    width: float
    kind: str  # trained | held_out | outside
    params: int
    accuracy: float
    macs: int | None
    row: dict  # the whole results.json row (every field a newer evaluation adds)


class Run:
    """A trained run directory: its networks at any width, their costs, their export."""

    def __init__(self, path: str | Path, overrides: Sequence[str] = (), result: dict | None = None):
        """`overrides`: config keys for reading (e.g. `eval.use_ema=false`); `result`: a
        consolidated checkpoint (consolidate.load_result) to use instead of the last stage."""
        self.dir = RunDir(Path(path))
        if not self.dir.config.is_file():
            raise ValueError(f"{self.dir.config} not found: {path} is not a run directory written by training")
        # files=False: a checkpoint it resumed from may be pruned since
        self.cfg: Config = load_config(self.dir.config, [*overrides, f"run_dir={path}"], files=False)
        self._result = result
        self._ctx = self._context_without_data()
        from .training.trained import result_network
        self.net: MetamorphicNet
        self.net, self.stage = result_network(self._ctx, result)
        self.calibration = self._stored_calibration()

    # --- what the run evaluated ----------------------------------------------------------
    @property
    def results(self) -> dict | None:
        """results.json of the run's evaluation, None before one."""
        return json.loads(self.dir.results_json.read_text()) if self.dir.results_json.is_file() else None

    @property
    def widths(self) -> list[WidthResult]:
        """Every evaluated width, with its kind (trained / held_out / outside) and accuracy."""
        rows = (self.results or {}).get("widths", [])
        return [WidthResult(r["width"], r.get("kind", "trained" if r.get("seen") else "held_out"), r["params"],
                            r["accuracy"], r.get("macs"), r) for r in rows]

    # --- any width -------------------------------------------------------------------------
    def params(self, width: float) -> int:
        return self.net.params_at(width)

    def macs(self, width: float) -> int:
        """Multiply-accumulates per image of the run's image size."""
        return self.cost.macs(width)

    @property
    def storage(self) -> dict[str, int]:
        """Parameters the run keeps to emit every width — the INR's, the teacher tensors it does
        not generate, SkipInit scalars — to set beside `params(width)` (MetamorphicNet.storage)."""
        return self.net.storage()

    @cached_property
    def cost(self) -> WidthCost:
        return WidthCost.of(self.net, self.image_size)

    def width_for(self, width: float | None = None, max_params: int = 0, max_macs: int = 0) -> float:
        """`width`, or the widest width within the budgets; refuses a width that rounds a
        channel group to no channel (it would not be the network asked for)."""
        if (width is None) == (not (max_params or max_macs)):
            raise ValueError("give a width or a budget (max_params and/or max_macs), not both")
        width = width if width is not None else self.cost.widest(max_params, max_macs)
        full = self.net.family.full_sizes()
        empty = sorted((g for g in self.net.groups if round(width * full[g]) < 1), key=lambda g: full[g])
        if empty:
            groups = f"{len(empty)} channel group{'s' if len(empty) > 1 else ''}"
            raise ValueError(f"width {width:g} rounds {groups} to no channel (the smallest, {empty[0]}, has "
                             f"{full[empty[0]]} at full width): need a width > {0.5 / full[empty[0]]:.4g}")
        return width

    @torch.no_grad()
    def weights(self, width: float) -> dict[str, torch.Tensor]:
        """The generated tensors of the evaluated network at `width`."""
        if self.calibration is not None and self.calibration.covers(self.net, width):
            return self.calibration.weights(self.net, width)
        from .evaluation.sweep import network_at
        from .training.trained import calibration_batch
        calib = calibration_batch(self._data(f"recalibrating width {width:g}")) if self._recalibrates else None
        return network_at(self.net, width, self.cfg.eval.samples, calib)

    def network(self, width: float | None = None, *, max_params: int = 0, max_macs: int = 0) -> PlainNet:
        """The plain network (nn.Module, eval mode) at `width` or the widest within a budget:
        exactly the network the evaluation scored at that width."""
        width = self.width_for(width, max_params, max_macs)
        return materialise(self.net, self.weights(width)).eval()

    def export(self, path: str | Path, width: float | None = None, *, max_params: int = 0, max_macs: int = 0,
               format: str | None = None) -> str:
        """Write the network at `width` (or within a budget) to `path`; `format` (pt,
        torchscript, pt2, onnx) defaults to the file's suffix. Returns how to load it."""
        fmt = format or {".onnx": "onnx", ".pt2": "pt2", ".ts": "torchscript"}.get(Path(path).suffix, "pt")
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r}: allowed {', '.join(FORMATS)}")
        width = self.width_for(width, max_params, max_macs)
        example = torch.zeros(2, self.in_channels, self.image_size, self.image_size)  # traced: values unused
        return write(self.network(width), Path(path), fmt, width, example)

    def describe(self, width: float) -> str:
        """One line: the width, its kind, cost and evaluated accuracy (what `export` prints)."""
        from .recipe.widths import TrainingWidths
        kind = TrainingWidths.from_config(self.cfg.meta).kind(width, self.net.sizes)
        return self.cost.describe(width, kind, self.results, self.stage)

    # --- the data, where a reader needs it ---------------------------------------------
    @property
    def image_size(self) -> int:
        if self.calibration is not None:
            return self.calibration.image_size
        return self._data("the image size (MACs, export)").splits.image_size

    @property
    def in_channels(self) -> int:
        return self.net.family.in_channels

    def evaluate(self, accelerator=None) -> dict:
        """The width sweep (eval.widths) on the test split: writes results.json/.md, the plots and
        calibration.pt, and returns the results. Needs the data."""
        from .distributed.accelerator import make_accelerator
        from .training.trained import evaluate_run
        results = evaluate_run(self._data("evaluating"), accelerator or make_accelerator(), self._result)
        self.calibration = self._stored_calibration()
        return results

    @property
    def _recalibrates(self) -> bool:
        return self.net.norm.recalibrates

    def _context_without_data(self) -> RunContext:
        """Config, family (as the teacher saved it), plan, teacher and reference: no data read
        (but for a zoo teacher that was never kept as teacher.pt: its family needs the data)."""
        from .training.teacher import load_teacher
        cfg = self.cfg
        if not self.dir.teacher.is_file() and not cfg.teacher.checkpoint:
            raise ValueError(f"{self.dir.teacher} not found and teacher.checkpoint is unset: "
                             "run stage 0 (`launch/train.py --stage 0`) first")
        # a run trained with `teacher.checkpoint` has no copy of its own: training's teacher is read
        saved = ckpt.load_torch(self.dir.teacher if self.dir.teacher.is_file() else zoo.locate(cfg.teacher.checkpoint),
                                "teacher checkpoint")
        if isinstance(saved, dict) and "family" in saved:
            family = family_from_dict(saved["family"])
            ctx = RunContext(cfg, None, family, stage_plan(cfg, family))
        else:  # a model zoo's state dict: the family follows from the config and the data
            ctx = RunContext.load(cfg)
        if self._result is None and ctx.completed_stages() == 0:
            raise ValueError(f"{self.dir.root} has no finished stage (no stage_1/COMPLETE): finish training first")
        teacher = load_teacher(cfg, ctx.family)
        if teacher["accuracy"] is None:  # a zoo teacher (teacher.checkpoint) that stage 0 never scored here
            raise ValueError(f"{self.dir.teacher} not found: run stage 0 (`launch/train.py --stage 0`) to "
                             f"score and keep the teacher {cfg.teacher.checkpoint}")
        if not self.dir.reference.is_file():
            raise ValueError(f"{self.dir.reference} not found: run stage 0 (`launch/train.py --stage 0`) first")
        return ctx.with_teacher(teacher, ckpt.load_torch(self.dir.reference, "teacher reference"))

    def _stored_calibration(self) -> Calibration | None:
        """calibration.pt when it holds this network (same stage, a final.pt's), else None."""
        if not self.dir.calibration.is_file():
            return None
        cal = Calibration.load(self.dir.calibration)
        source = "final" if self._result is None else "checkpoint"
        return cal if cal.stage == self.stage and cal.source == source else None

    def _data(self, why: str) -> RunContext:
        """The run's context with its data splits, loaded once; an error that says what needed
        them when they cannot be read."""
        if self._ctx.splits is None:
            from dataclasses import replace

            from .data import load_splits
            try:
                splits = load_splits(self.cfg.data, self.cfg.train.seed)
            except (OSError, RuntimeError, ValueError) as e:
                stored = ("it stores no calibration.pt (evaluated before it existed, or not yet)" if self.calibration is None
                          else "this width is not among the networks its calibration.pt keeps (eval.calibrate)")
                hint = "" if why == "evaluating" else (
                    f", because {stored}: run `neumeta-dist eval --run {self.dir.root}` once with the data present "
                    "to store every network (eval.calibrate=all)")
                raise MissingCalibration(f"{self.dir.root}: {why} needs the run's data{hint}; reading it failed: {e}") from e
            self._ctx = replace(self._ctx, splits=splits)
        return self._ctx


def load(path: str | Path, overrides: Sequence[str] = ()) -> Run:
    """A finished run directory; or a checkpoint — a `stage_<k>/checkpoint_<step>` directory
    (ZeRO shards included) or a file of `neumeta-dist consolidate` — with the run it belongs to."""
    from .distributed.consolidate import consolidate, load_result
    path = Path(path)
    if path.is_file() or (path.is_dir() and not RunDir(path).config.is_file() and (path / "meta.json").is_file()):
        result = load_result(path) if path.is_file() else consolidate(path)
        source = result.get("source", {}).get("checkpoint")  # final.pt has none: stage_<k>/final.pt
        return Run(RunDir.of_checkpoint(Path(source) if source else path).root, overrides, result)
    return Run(path, overrides)


def train(config: str | Path | None, overrides: Sequence[str] = (), stage: int | None = None) -> Run | None:
    """Run the pipeline of `config` (+ `key=value` overrides) in this process: the whole plan, or
    only `stage`; returns the evaluated run (None when stages remain)."""
    from .training.pipeline import run as run_pipeline
    cfg = load_config(config, list(overrides))
    return Run(cfg.run_dir) if run_pipeline(cfg, stage) is not None else None
