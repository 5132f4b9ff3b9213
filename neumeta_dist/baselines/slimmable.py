"""The baseline a practitioner would train instead: a universally slimmable network (US-Nets,
Yu & Huang, ICCV 2019) of the same family.

One BN network at full width whose narrower networks are its leading channels — in the same
channel groups the metamorphic network scales (`meta.generated` + `meta.scale`), so every width
has exactly the metamorphic network's parameter count. Its three tricks, as the paper has them:
- the *sandwich rule*: each step trains the widest, the narrowest and `train.widths_per_step − 2`
  other widths (drawn as the metamorphic run draws them: the range, or `meta.train_widths`),
  all on one batch, their gradients summed;
- *in-place distillation*: the widest learns from the labels, every narrower width from the
  widest's detached predictions (soft targets, T = 1);
- *BN recalibration*: BN's affine parameters are shared across widths but its statistics are
  not, so after training each evaluated width gets its own, estimated on `eval.calib_samples`
  training images (the paper: ~1,000 suffice).
SGD with the teacher's settings (lr, momentum, weight decay, label smoothing), cosine schedule.

Budget: by default as many image passes as the metamorphic pipeline of the same config spends
— the teacher's epochs plus every stage's steps × micro-batches × batch size — so the table
compares two ways of spending the same compute. `neumeta-dist slimmable --config X` writes
`<run_dir>/results.json` in the metamorphic runs' schema (recipe `slimmable`) and
`<run_dir>/slimmable.pt`; with that file present training is skipped and only evaluated.

On the INR's footing (`slimmable.*`, docs/protocol.md): started from the run's teacher
(`init: teacher`), its soft targets added at every width (`teacher_kd`), each width
micro-batch on its own images (`batches: per_width`), the INR stages' steps only (`budget:
stages`), its EMA evaluated (`ema`) and the best EMA network on validation kept
(`train.select_every`, scored as the INR stages score). It checkpoints every
`train.save_every` steps in `<run_dir>/slimmable/` and resumes from there.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import atomic_torch_save, load_torch
from ..config import Config
from ..data import Splits, sample_images, train_batches
from ..distributed.accelerator import make_accelerator
from ..evaluation.accuracy import accuracy, by_split
from ..evaluation.results import write_results
from ..evaluation.sweep import width_row
from ..models.family import Layer, Teacher, layer_areas, mac_count, parameter_count
from ..recipe.losses import kd
from ..recipe.stages import generated_layers, metamorphic_groups, step_images, steps_per_stage
from ..recipe.widths import TrainingWidths
from ..records import provenance
from ..training.context import RunContext
from ..training.ema import EMA
from ..training.logger import Logger
from ..training.process import seed_everything, set_threads
from ..training.selection import Selection
from ..training.teacher import load_teacher, teacher_network

Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]


class Slimmable(nn.Module):
    """A full-width BN network of the family run at any sizes by slicing leading channels."""

    def __init__(self, family):
        super().__init__()
        if family.norm != "batch":
            raise ValueError("the slimmable baseline needs a BN family (meta.norm other than groupnorm)")
        self.family, self.net = family, Teacher(family)

    def forward(self, x: torch.Tensor, sizes: Mapping[str, int], stats: Stats | None = None,
                record: Stats | None = None) -> torch.Tensor:
        """Logits at `sizes`: BN on batch statistics (training, calibration; `record` collects
        them) or on `stats`, the width's recalibrated ones."""
        def layer(spec: Layer, h: torch.Tensor) -> torch.Tensor:
            key = spec.name.replace(".", "_")
            conv, o, i = self.net.convs[key], sizes[spec.out_group], sizes[spec.in_group]
            if spec.is_linear:
                return F.linear(h, conv.weight[:o, :i], conv.bias[:o])
            y = F.conv2d(h, conv.weight[:o, :i], None, spec.stride, spec.k // 2)
            bn = self.net.norms[key]
            if stats is None:
                if record is not None:
                    record[spec.name] = (y.mean((0, 2, 3)).detach(), y.var((0, 2, 3)).detach())
                return F.batch_norm(y, None, None, bn.weight[:o], bn.bias[:o], training=True, eps=bn.eps)
            mean, var = stats[spec.name]
            return F.batch_norm(y, mean, var, bn.weight[:o], bn.bias[:o], training=False, eps=bn.eps)
        return self.family.forward(x, layer)


@torch.no_grad()
def calibrate(net: Slimmable, sizes: Mapping[str, int], images: torch.Tensor, chunk: int = 256) -> Stats:
    """BN statistics of the width-`sizes` network: the mean over chunks of its batch statistics."""
    per_chunk = []
    for x in images.split(chunk):
        record: Stats = {}
        net(x, sizes, record=record)
        per_chunk.append(record)
    return {n: tuple(torch.stack([r[n][j] for r in per_chunk]).mean(0) for j in (0, 1)) for n in per_chunk[0]}


def budget_steps(cfg: Config, n_train: int, n_stages: int) -> int:
    """Steps that spend the metamorphic pipeline's images: every stage's (`slimmable.budget:
    stages`), or the teacher's epochs too (`pipeline`, the published comparison)."""
    per_step = step_images(cfg)
    stage_steps = steps_per_stage(cfg, n_train)
    # the teacher's epochs count even when the run loads it (teacher.checkpoint): it was
    # trained for the pipeline all the same
    teacher = cfg.teacher.epochs * n_train if cfg.slimmable.budget == "pipeline" else 0
    return max(1, round((teacher + n_stages * stage_steps * per_step) / per_step))


def images_per_step(cfg: Config) -> int:
    """Distinct images a step reads: one batch for every width, or one per width micro-batch."""
    return cfg.data.batch_size * (cfg.train.widths_per_step if cfg.slimmable.batches == "per_width" else 1)


@torch.no_grad()
def from_teacher(net: Slimmable, teacher: dict, groups) -> None:
    """Start from the teacher's weights, the scaled groups' channels most important first (the
    order the INR's nested coordinates keep, smoothing.importance_order), so that each narrower
    network starts as the teacher's strongest channels; the function is unchanged."""
    from ..core.smoothing import importance_order
    net.net.load_state_dict(teacher["state_dict"])
    folded = net.net.folded()
    perms = {g: importance_order(net.family, folded, g) for g in groups}
    for spec in net.family.layers:
        key = spec.name.replace(".", "_")
        conv, bn = net.net.convs[key], net.net.norms[key] if key in net.net.norms else None
        if spec.out_group in perms:
            p = perms[spec.out_group]
            for t in [conv.weight, conv.bias, *((bn.weight, bn.bias, bn.running_mean, bn.running_var) if bn else ())]:
                if t is not None:
                    t.copy_(t[p])
        if spec.in_group in perms:
            conv.weight.copy_(conv.weight[:, perms[spec.in_group]])


class _State:
    """The slimmable run's resumable state in `<run_dir>/slimmable/`: `last.pt` (network,
    optimiser, schedule, EMA, step; written atomically every `train.save_every` steps) and the
    best-on-validation candidate (training/selection.py's `best.pt`). A file from another config digest
    is ignored, as a stage's checkpoint is."""

    def __init__(self, folder: Path, digest: str):
        self.path, self.digest = folder / "last.pt", digest
        saved = load_torch(self.path, "slimmable checkpoint") if self.path.is_file() else None
        self.saved = saved if saved and saved.get("config_digest") == digest else None

    @property
    def step(self) -> int:
        return self.saved["step"] if self.saved else 0

    def save(self, step: int, net, opt, sched, ema: EMA | None, is_main: bool) -> None:
        if is_main:
            atomic_torch_save({"step": step, "model": net.state_dict(), "opt": opt.state_dict(),
                               "sched": sched.state_dict(), "ema": ema.state_dict(cpu=True) if ema else None,
                               "config_digest": self.digest}, self.path)


def train(net: Slimmable, cfg: Config, accelerator, splits: Splits, widths: TrainingWidths, groups,
          steps: int, folder: Path, log_dir: Path, teacher: Teacher | None = None) -> dict:
    """The sandwich rule with in-place distillation (+ the teacher's soft targets with
    `slimmable.teacher_kd`), resumable from `folder`; returns the state to evaluate
    (`model`, and `ema` with `slimmable.ema`) — the best on validation with `train.select_every`."""
    tc, sc = cfg.teacher, cfg.slimmable
    state = _State(folder, cfg.digest())
    if state.saved:
        net.load_state_dict(state.saved["model"])
    opt = torch.optim.SGD(net.parameters(), lr=sc.lr or tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay,
                          nesterov=True)
    model, opt = accelerator.prepare(net, opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    ema = EMA(net, cfg.train.ema_decay) if sc.ema else None
    if state.saved:
        opt.load_state_dict(state.saved["opt"])
        sched.load_state_dict(state.saved["sched"])
        if ema:
            ema.load_state_dict(state.saved["ema"])
    start, n = state.step, cfg.train.widths_per_step
    per_width = sc.batches == "per_width"
    data = train_batches(cfg, accelerator, splits.train, start * (n if per_width else 1))
    select = Selection(folder, cfg.train.select_every, cfg.digest())
    widest = net.family.sizes(1.0, groups)
    log = Logger(accelerator, log_dir, steps, "slimmable", initial=start, log_with=cfg.train.log_with,
                 config=cfg.to_dict())
    for step in range(start + 1, steps + 1):
        model.train()
        rng = random.Random(f"{cfg.train.seed}/slimmable/{step}")
        full = None
        for micro in range(n):
            fraction = widths.draw(micro, True, rng)
            if micro == 0 or per_width:
                x, y = next(data)
                with torch.no_grad():
                    t_logits = teacher(x) if teacher is not None else None
                    # in-place distillation's targets: the widest on these images (before the
                    # forward that DDP pairs with the backward)
                    target = model(x, widest) if micro > 0 else None
            logits = model(x, net.family.sizes(fraction, groups))
            if micro == 0:  # the widest: labels
                loss, full, first_y = F.cross_entropy(logits, y, label_smoothing=tc.label_smoothing), logits.detach(), y
            else:  # in-place distillation from the widest
                loss = kd(logits, full if target is None else target, 1.0)
            if t_logits is not None:
                loss = loss + sc.teacher_kd * kd(logits, t_logits, 1.0)
            accelerator.backward(loss)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if ema:
            ema.update(accelerator.unwrap_model(model))
        log.count(images_per_step(cfg) * accelerator.num_processes)
        if step % cfg.train.log_every == 0 or step == steps:
            log.step(step, lambda: {"slimmable/loss": F.cross_entropy(full, first_y).item()}, "slimmable/loss",
                     sched.get_last_lr()[0], {}, prefix="slimmable/")
        if select.due(step, steps):
            candidate = _candidate(accelerator.unwrap_model(model), ema)
            scored = _evaluated(Slimmable(net.family), candidate).to(accelerator.device)
            val = validate(scored, cfg, accelerator, splits, widths, groups)
            kept = select.offer(step, val, candidate, accelerator.is_main_process)
            log.scalars(step, {**{f"val/accuracy@{w:g}": a for w, a in val.items()}, "val/kept": float(kept)})
        if (cfg.train.save_every and step % cfg.train.save_every == 0) or step == steps:
            state.save(step, accelerator.unwrap_model(model), opt, sched, ema, accelerator.is_main_process)
    log.close()
    if select.best is not None:
        return {"model": select.best["model"], "ema": select.best["ema"], "selected_step": select.best["step"],
                "val": select.best["val"]}
    return _candidate(accelerator.unwrap_model(model), ema)


def _candidate(net: Slimmable, ema: EMA | None) -> dict:
    return {"model": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            "ema": ema.state_dict(cpu=True) if ema else None}


def _evaluated(net: Slimmable, state: dict) -> Slimmable:
    """`net` holding the network `state` evaluates: its EMA weights where it has them."""
    net.load_state_dict(state["model"])
    if state.get("ema"):
        ema = EMA(net, state["ema"]["decay"])
        ema.load_state_dict(state["ema"])
        ema.copy_to(net)
    return net.eval()


@torch.no_grad()
def validate(net: Slimmable, cfg: Config, accelerator, splits: Splits, widths: TrainingWidths, groups) -> dict:
    """Validation accuracy at the ends of the training range, each width recalibrated as at
    evaluation: the INR stages' selection score (train._validate)."""
    calib = sample_images(splits.train, cfg.eval.calib_samples).to(accelerator.device)
    out = {}
    for w in sorted({widths.low, widths.high}):
        sizes = net.family.sizes(w, groups)
        stats = calibrate(net, sizes, calib)
        out[w] = accuracy(lambda x: net(x, sizes, stats), splits.val, cfg.data.eval_batch_size, accelerator)
    return out


def run(cfg: Config, steps: int | None = None) -> dict:
    """Train (unless `<run_dir>/slimmable.pt` exists) and sweep `eval.widths`; returns results."""
    set_threads()
    accelerator = make_accelerator()
    seed_everything(cfg.train.seed)
    ctx = RunContext.load(cfg)
    splits, family, path = ctx.splits, ctx.family, ctx.run.slimmable
    groups = metamorphic_groups(family, generated_layers(family, cfg.meta.generated), cfg.meta.scale)
    widths = TrainingWidths.from_config(cfg.meta)
    net = Slimmable(family)
    steps = steps or budget_steps(cfg, len(splits.train), len(ctx.stages))
    art = load_teacher(cfg, family)
    if cfg.slimmable.init == "teacher" or cfg.slimmable.teacher_kd:
        if art is None:
            raise SystemExit(f"error: slimmable.init=teacher / slimmable.teacher_kd need a teacher: set "
                             f"teacher.checkpoint (a teacher.pt) or train {ctx.run.teacher} first")
    t0 = time.perf_counter()
    if path.is_file():
        saved = load_torch(path, "slimmable network")
        steps, wall = saved["steps"], saved["wall_s"]
    else:
        if cfg.slimmable.init == "teacher":
            from_teacher(net, art, groups)
        teacher = _frozen_teacher(family, art, accelerator) if cfg.slimmable.teacher_kd else None
        result = train(net, cfg, accelerator, splits, widths, groups, steps, ctx.run.root / "slimmable",
                       ctx.run.tb("slimmable"), teacher)
        wall = round(time.perf_counter() - t0, 1)  # this process's: a resumed run's earlier part is not in it
        saved = {**result, "steps": steps, "wall_s": wall}
        if accelerator.is_main_process:
            atomic_torch_save(saved, path)
    net = _evaluated(net, saved if "model" in saved else {"model": saved["state_dict"]})
    results = evaluate(net.to(accelerator.device), cfg, accelerator, splits, widths, groups)
    full = next(r for r in results if r["width"] == max(w["width"] for w in results))
    teacher_row = ({"accuracy": art["accuracy"]} if art and art["accuracy"] is not None else {"accuracy": full["accuracy"]})
    held_out = splits.held_out(cfg.eval.splits)
    if art and held_out:
        teacher_row["by_split"] = by_split(_frozen_teacher(family, art, accelerator), splits.test, held_out,
                                           cfg.data.eval_batch_size, accelerator)
    results = {"teacher": {**teacher_row, "params": parameter_count(family, family.full_sizes())},
               "widths": results, "dataset": splits.name, "model": family.name,
               "recipe": recipe_name(cfg),
               "stages_completed": 1, "stages_planned": 1, "generated_layers": [],
               **provenance.record(config=cfg.to_dict(), seed=cfg.train.seed, steps=steps,
                                   images=steps * images_per_step(cfg),
                                   image_passes=steps * step_images(cfg),
                                   selected_step=saved.get("selected_step"),
                                   val=saved.get("val"),
                                   train_widths=list(widths.discrete) or [widths.low, widths.high],
                                   wall_s={"train": wall})}
    if accelerator.is_main_process:
        write_results(ctx.run.root, results)
    return results


def recipe_name(cfg: Config) -> str:
    """The row's name: `recipe.name` when it names a slimmable variant, and one row per seed of
    the plain `slimmable` (evaluation/report.py refuses two runs of one name)."""
    name = cfg.recipe.name if cfg.recipe.name.startswith("slimmable") else "slimmable"
    return f"{name}_seed{cfg.train.seed}" if name == "slimmable" and cfg.train.seed else name


def _frozen_teacher(family, art: dict, accelerator) -> Teacher:
    return teacher_network(family, art).to(accelerator.device).requires_grad_(False)


@torch.no_grad()
def evaluate(net: Slimmable, cfg: Config, accelerator, splits: Splits, widths: TrainingWidths, groups) -> list[dict]:
    calib = sample_images(splits.train, cfg.eval.calib_samples).to(accelerator.device)
    family = net.family
    full = parameter_count(family, family.full_sizes())
    sizes_at = lambda w: family.sizes(w, groups)
    areas = layer_areas(family, splits.image_size)
    rows = []
    for w in sorted(cfg.eval.widths):
        sizes = sizes_at(w)
        stats = calibrate(net, sizes, calib)
        acc = by_split(lambda x: net(x, sizes, stats), splits.test, splits.held_out(cfg.eval.splits),
                       cfg.data.eval_batch_size, accelerator)
        params = parameter_count(family, sizes)
        rows.append(width_row(w, widths.describe(w, sizes_at, groups), params, full, acc,
                              mac_count(family, sizes, areas)))
    return rows
