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
"""
from __future__ import annotations

import itertools
import math
import random
import time
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import provenance
from .accuracy import accuracy
from .checkpoint import atomic_torch_save, load_torch
from .config import Config
from .data import Splits, sample_images, train_batches
from .distributed.accelerator import make_accelerator
from .logger import Logger
from .losses import kd
from .models.family import Layer, Teacher, layer_areas, mac_count, parameter_count
from .process import seed_everything, set_threads
from .recipe import generated_layers, metamorphic_groups
from .results import write_results
from .run import RunContext
from .sweep import width_row
from .teacher import load_teacher
from .widths import TrainingWidths

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
    """Steps that spend the metamorphic pipeline's image passes (teacher + every stage)."""
    per_step = cfg.data.batch_size * cfg.train.widths_per_step
    stage_steps = cfg.train.max_steps or max(1, int(cfg.train.epochs * n_train / per_step))
    # the teacher's epochs count even when the run loads it (teacher.checkpoint): it was
    # trained for the pipeline all the same
    return max(1, round((cfg.teacher.epochs * n_train + n_stages * stage_steps * per_step) / per_step))


def train(net: Slimmable, cfg: Config, accelerator, splits: Splits, widths: TrainingWidths, groups,
          steps: int, log_dir: Path) -> Slimmable:
    tc = cfg.teacher
    opt = torch.optim.SGD(net.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay,
                          nesterov=True)
    model, opt = accelerator.prepare(net, opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    data = train_batches(cfg, accelerator, splits.train)
    log = Logger(accelerator, log_dir, steps, "slimmable")
    n = cfg.train.widths_per_step
    for step, (x, y) in enumerate(itertools.islice(data, steps), start=1):
        model.train()
        rng = random.Random(f"{cfg.train.seed}/slimmable/{step}")
        full = None
        for micro in range(n):
            fraction = widths.draw(micro, True, rng)
            logits = model(x, net.family.sizes(fraction, groups))
            if full is None:
                loss, full = F.cross_entropy(logits, y, label_smoothing=tc.label_smoothing), logits.detach()
            else:  # in-place distillation from the widest
                loss = kd(logits, full, 1.0)
            accelerator.backward(loss)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        log.count(len(x) * n * accelerator.num_processes)
        if step % cfg.train.log_every == 0 or step == steps:
            log.step(step, lambda: {"slimmable/loss": F.cross_entropy(full, y).item()}, "slimmable/loss",
                     sched.get_last_lr()[0], {}, prefix="slimmable/")
    log.close()
    return accelerator.unwrap_model(model)


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
    t0 = time.perf_counter()
    if path.is_file():
        saved = load_torch(path, "slimmable network")
        net.load_state_dict(saved["state_dict"])
        steps, wall = saved["steps"], saved["wall_s"]
    else:
        net = train(net, cfg, accelerator, splits, widths, groups, steps, ctx.run.tb("slimmable"))
        wall = round(time.perf_counter() - t0, 1)
        if accelerator.is_main_process:
            atomic_torch_save({"state_dict": net.state_dict(), "steps": steps, "wall_s": wall}, path)
    results = evaluate(net.to(accelerator.device).eval(), cfg, accelerator, splits, widths, groups)
    teacher = load_teacher(cfg, family)
    full = next(r for r in results if r["width"] == max(w["width"] for w in results))
    results = {"teacher": {"accuracy": teacher["accuracy"] if teacher and teacher["accuracy"] is not None
                                       else full["accuracy"],
                           "params": parameter_count(family, family.full_sizes())},
               "widths": results, "dataset": splits.name, "model": family.name,
               "recipe": f"slimmable_seed{cfg.train.seed}" if cfg.train.seed else "slimmable",  # one row per seed
               "stages_completed": 1, "stages_planned": 1, "generated_layers": [],
               **provenance.record(config=cfg.to_dict(), seed=cfg.train.seed, steps=steps,
                                   images=steps * cfg.data.batch_size * cfg.train.widths_per_step,
                                   train_widths=list(widths.discrete) or [widths.low, widths.high],
                                   wall_s={"train": wall})}
    if accelerator.is_main_process:
        write_results(ctx.run.root, results)
    return results


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
        acc = accuracy(lambda x: net(x, sizes, stats), splits.test, cfg.data.eval_batch_size, accelerator)
        params = parameter_count(family, sizes)
        rows.append(width_row(w, widths.describe(w, sizes_at, groups), params, full, acc,
                              mac_count(family, sizes, areas)))
    return rows
