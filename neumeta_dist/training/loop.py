"""The stage loop: one INR stage trained (or resumed) under Accelerate.

Read `train_stage` top to bottom: set-up (the stage's starting network, optimiser, EMA,
resume point), then the loop — each step `train_step` runs `train.widths_per_step`
micro-batches, each at its own width (the first is the full width), generating the network
at that width inside the model's forward and backpropagating CE/KD/reconstruction/L2 into
the INR; the optimiser steps once and the EMA follows; then log, validate on the held-out
split, checkpoint — and the hand-off: `final.pt` and `COMPLETE`, written last.

Stages (recipe/stages.py): stage 0 (training/teacher.py) trains the teacher and smooths it; stage k ≥ 1
generates the first k units of the plan, starting from stage k−1's selected (EMA) network.
training/pipeline.py runs the stages in order; training/checkpointer.py owns save/resume; training/trained.py the
queries on finished stages.

Everything random in a step is a function of (seed, step, micro-batch, rank) and the data
order is a function of (seed, epoch), so a resumed run replays exactly what the
uninterrupted one would have done — on the same number of processes; on another, it trains the
rest of the interrupted epoch dealt over its own ranks (training/checkpointer.py, data/position.py).
"""
from __future__ import annotations

import math
import random
import time

import torch

from ..config import Config
from ..core.metamorphic import MetamorphicNet
from ..data import train_batches
from ..distributed import data_parallel as parallel
from ..distributed import preemption
from ..distributed.coordinate_parallel import generation_strategy
from ..evaluation.accuracy import accuracy
from ..evaluation.sweep import network_at
from ..models.family import Teacher
from ..recipe.inr_init import initialise_stage, reconstruction_error, reconstruction_warmup
from ..recipe.losses import step_losses
from ..recipe.stages import Stage, images_note, steps_per_stage
from ..recipe.widths import TrainingWidths
from ..records import lineage
from .checkpointer import Checkpointer
from .context import RunContext
from .ema import EMA
from .execution import Execution
from .logger import Logger
from .probe import Callback
from .selection import Selection
from .trained import build_net, calibration_batch, load_trained, selected_network


def step_rng(cfg: Config, step: int, micro: int, rank: int) -> tuple[float, torch.Generator]:
    """The width and the coordinate-noise generator of one micro-batch (stateless).

    Micro-batch 0 is the widest network; with `train.sandwich` micro-batch 1 is the narrowest
    (the sandwich rule of slimmable networks: the extremes bound every width in between);
    the rest are drawn from the training range or set (recipe/widths.py). `step` counts from the
    first stage under `train.stage_stream=continue`. Coordinate-parallel generation needs
    every rank to generate the same network, so there the rank does not enter (as rank 0's).
    """
    rank = 0 if cfg.train.generation == "coordinate_parallel" else rank
    key = f"{cfg.train.seed}/{step}/{micro}/{rank}"
    fraction = TrainingWidths.from_config(cfg.meta).draw(micro, cfg.train.sandwich, random.Random(key))
    return fraction, torch.Generator().manual_seed(random.Random(key + "/noise").getrandbits(63))


def stream_offset(cfg: Config, k: int, total: int) -> int:
    """Optimiser steps of the data/width stream that come before stage k's first step."""
    return (k - 1) * total if cfg.train.stage_stream == "continue" else 0


def lr_lambda(cfg: Config, total: int):
    warm = cfg.train.warmup_steps or round(cfg.train.warmup_fraction * total)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.train.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(step - warm, total - warm) / max(1, total - warm)))
    return f


def train_stage(ctx: RunContext, accelerator, k: int, teacher: Teacher | None = None,
                callback: Callback | None = None) -> dict:
    """Train (or resume) stage k; writes `final.pt` and `COMPLETE` last."""
    with preemption.Preemption.watch() as stop:  # a SLURM signal stops the stage at a step boundary
        return _train_stage(ctx, accelerator, k, teacher, callback, stop)


def _train_stage(ctx: RunContext, accelerator, k: int, teacher: Teacher | None, callback: Callback | None,
                 stop: preemption.Preemption) -> dict:
    t0 = time.perf_counter()
    cfg, tc, stage, sdir = ctx.cfg, ctx.cfg.train, ctx.stages[k - 1], ctx.stage_dir(k)
    micro_batches, callback = tc.widths_per_step, callback or Callback()
    parallel.configure(accelerator, micro_batches, tc.grad_clip, tc.clip_mode, cfg.data.batch_size, tc.precision)
    checkpointer = Checkpointer(cfg, accelerator, sdir)
    resume_from = checkpointer.find_resume_point()
    # On the accelerator before the warm-up: it is thousands of small INR steps.
    model = _stage_start(ctx, k).to(accelerator.device)
    parallel.freeze_unused(model, list(model.alphas().values()))
    total = steps_per_stage(cfg, len(ctx.splits.train))
    log = Logger(accelerator, ctx.run.tb(sdir.name), total, sdir.name, log_with=cfg.train.log_with, config=cfg.to_dict())
    if resume_from is None:
        _initialise(cfg, model, stage, log)
    net, opt, ex, teacher = prepare_step(cfg, accelerator, model, teacher)
    model = accelerator.unwrap_model(net)
    log.print(f"{sdir.name}: weight generation {model.generation}")
    if note := images_note(cfg, len(ctx.splits.train), accelerator.num_processes):
        log.print(f"{sdir.name}: {note}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
    with parallel.gathered(accelerator, model):
        ema = EMA(model, tc.ema_decay)

    start = checkpointer.resume(sched, ema)
    log.progress(start)
    offset = stream_offset(cfg, k, total)
    data = train_batches(cfg, accelerator, ctx.splits.train,
                         checkpointer.resume_position or (offset + start) * micro_batches)
    select = Selection(sdir, tc.select_every, cfg.digest())
    callback.on_start(lambda: parallel.full_state_dict(accelerator, model))
    for step in range(start, total):
        full_terms, dtype = train_step(cfg, accelerator, net, opt, data, offset + step, ex, teacher, callback)
        if step == start:  # what the forward ran in, as measured: a launcher or engine can override autocast
            log.print(f"{sdir.name}: the student computes in {str(dtype).removeprefix('torch.')} "
                      f"(train.precision={tc.precision})")
        log.count(micro_batches * cfg.data.batch_size * accelerator.num_processes)
        sched.step()
        with parallel.gathered(accelerator, model):
            ema.update(model)
        done = step + 1
        log_step = done % tc.log_every == 0 or done == total
        if log_step:
            log.step(done, lambda: _step_scalars(accelerator, model, full_terms), "loss/total",
                     sched.get_last_lr()[0], data.fault_scalars())
        if select.due(done, total):
            _offer(ctx, accelerator, model, ema, stage, select, log, done)
        if stop.requested(accelerator, poll=log_step) and done < total:  # preempted or near the time limit
            checkpointer.save(done, sched, ema, data)
            log.close()
            stop.exit(f"{sdir.name} step {done}")
        if (tc.save_every and done % tc.save_every == 0) or done == total:
            checkpointer.save(done, sched, ema, data)
        callback.on_step_end(done)
    final = {"model": parallel.full_state_dict(accelerator, model), "ema": ema.state_dict(cpu=True),
             "config": cfg.to_dict(), "stage": k, "steps": total}
    callback.on_end(final["model"], final["ema"], parallel.local_numel(model))
    _hand_off(ctx, accelerator, final, select, stage, log, total)
    checkpointer.finish(final, {"steps": total, "val": final["val"], "wall_s": round(time.perf_counter() - t0, 1),
                                "made_by": lineage.record(cfg, k)})
    return final


def prepare_step(cfg: Config, accelerator, model: MetamorphicNet, teacher: Teacher | None = None):
    """What `train_step` runs on, from a stage's network: the prepared network and its
    optimiser (per-group lr and decay, fused on CUDA), the execution settings applied, the
    weight-generation strategy installed, and the KD teacher (if any) placed for the ranks.
    benchmarks/config_step.py times the step on exactly this."""
    tc = cfg.train
    ex = Execution.from_config(tc)
    opt = torch.optim.AdamW(_param_groups(cfg, model), **ex.optimizer_kwargs(accelerator.device))
    net, opt = accelerator.prepare(model, opt)
    model = accelerator.unwrap_model(net)
    parallel.register_external_parameters(accelerator, model)
    model.generation = generation_strategy(tc.generation)
    if teacher is not None:
        teacher = parallel.prepare_teacher(accelerator, teacher, tc.teacher_mode, tc.precision)
    ex.prepare(model, teacher)
    return net, opt, ex, teacher


def train_step(cfg: Config, accelerator, net, opt, data, step: int, ex: Execution, teacher=None,
               callback: Callback | None = None) -> tuple[dict[str, torch.Tensor], torch.dtype]:
    """One optimiser step: `train.widths_per_step` micro-batches, each at its own width (the
    first at full width), gradients accumulated; returns the full-width micro-batch's losses,
    still on the device (reading them back here would sync every step), and the dtype its
    logits were computed in."""
    model, rank = accelerator.unwrap_model(net), accelerator.process_index
    net.train()
    full_weights = None  # the step's full-width network, source of in-place distillation
    for micro in range(cfg.train.widths_per_step):
        x, y = next(data)
        if callback is not None:
            callback.on_batch(step, micro, x)
        x = ex.batch(x)
        fraction, gen = step_rng(cfg, step, micro, rank)
        with accelerator.accumulate(net):
            with ex.autocast(accelerator.device):
                with torch.no_grad():  # before the step's forward: DDP pairs that one with its backward
                    own = net(x, 1.0, weights=full_weights)[0] if full_weights is not None and fraction < 1.0 else None
                logits, generated = net(x, fraction, generator=gen)
                with torch.no_grad():
                    t_logits = teacher(x) if teacher is not None else None
            terms = step_losses(cfg.loss, logits.float(), y, generated, model.reference, fraction == 1.0,
                                None if t_logits is None else t_logits.float(), None if own is None else own.float())
            accelerator.backward(terms["total"])
            if accelerator.sync_gradients:
                parallel.clip(accelerator, net, cfg.train.grad_clip, cfg.train.clip_mode)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if micro == 0:
            full_terms, dtype = {f"loss/{n}": v.detach() for n, v in terms.items()}, logits.dtype
            if cfg.loss.inplace_kd > 0 and fraction == 1.0:
                full_weights = {n: w.detach() for n, w in generated.items()}
    return full_terms, dtype


def _stage_start(ctx: RunContext, k: int) -> MetamorphicNet:
    """Stage k's network before training: stage k−1's selected network, stage k's layers active."""
    net = build_net(ctx.cfg, ctx.family, ctx.reference["weights"])
    if k > 1:
        prev = load_trained(ctx, k - 1)
        net.load_state_dict(prev.state_dict())
    net.activate(ctx.stages[k - 1].layers)
    return net


def _param_groups(cfg: Config, model: MetamorphicNet) -> list[dict]:
    """INR, SkipInit scales and the shared classifier each with their own lr and decay."""
    tc = cfg.train
    trainable = lambda m: [p for p in m.parameters() if p.requires_grad]
    groups = [dict(params=trainable(model.inr), lr=tc.lr, weight_decay=tc.weight_decay),
              dict(params=trainable(model.alpha), lr=tc.lr_alpha, weight_decay=tc.shared_weight_decay),
              dict(params=trainable(model.shared), lr=tc.lr_head, weight_decay=tc.shared_weight_decay)]
    return [g for g in groups if g["params"]]


def _initialise(cfg: Config, model: MetamorphicNet, stage: Stage, log: Logger) -> None:
    """The new units' heads (recipe.init, + warm-up), then how far they are from the teacher."""
    rc = cfg.recipe
    new = initialise_stage(model, stage, rc.init, cfg.train.seed)
    fractions = [1.0, 1.0, cfg.meta.max_width, (cfg.meta.min_width + cfg.meta.max_width) / 2, cfg.meta.min_width]
    reconstruction_warmup(model, rc.warmup_steps, rc.warmup_lr, fractions, cfg.loss.recon_weighting, names=new,
                          log=lambda s, e: log.scalars(s, {"init/warmup_recon_mse": e}))
    errors = {f: reconstruction_error(model, f, new) for f in sorted(set(fractions))}
    log.scalars(0, {f"init/new_recon_mse@{f:g}": e for f, e in errors.items()})
    log.print(f"stage {stage.index} adds {', '.join(u.name for u in stage.new)} (init={rc.init}): "
              "reconstruction MSE " + ", ".join(f"{f:g}: {e:.3e}" for f, e in errors.items()))


def _step_scalars(accelerator, model, full_terms: dict) -> dict[str, float]:
    """The step's full-width losses and every α; reading them back syncs, so it happens only
    every `train.log_every` steps (gathering α is a collective under ZeRO-3: every rank)."""
    full_terms = {n: v.item() for n, v in full_terms.items()}
    with parallel.gathered(accelerator, model):
        alphas = {f"alpha/{b}": a.item() for b, a in model.alphas().items()}
    return {**full_terms, **alphas}


def _offer(ctx: RunContext, accelerator, model, ema, stage: Stage, select: Selection, log: Logger,
           step: int) -> None:
    """Score the EMA network on the held-out split and offer it to the stage's selection."""
    candidate = {"model": parallel.full_state_dict(accelerator, model), "ema": ema.state_dict(cpu=True)}
    net = selected_network(ctx, candidate, stage.layers).to(accelerator.device)
    val = _validate(ctx, accelerator, net)
    kept = select.offer(step, val, candidate, accelerator.is_main_process)
    log.scalars(step, {**{f"val/accuracy@{w:g}": a for w, a in val.items()}, "val/kept": float(kept)})


def _hand_off(ctx: RunContext, accelerator, final: dict, select: Selection, stage: Stage, log: Logger,
              total: int) -> None:
    """The stage's result in `final`: the best held-out candidate when selection ran, else
    the last network, with its held-out accuracies (`final["val"]`)."""
    if select.best is not None:  # the best held-out candidate is the stage's result
        best = select.best
        final.update(model=best["model"], ema=best["ema"], selected_step=best["step"])
        val = best["val"]
    else:
        selected = selected_network(ctx, final, stage.layers).to(accelerator.device)
        val = _validate(ctx, accelerator, selected)
        log.scalars(total, {f"val/accuracy@{w:g}": a for w, a in val.items()})
    name = ctx.stage_dir(stage.index).name
    log.print(f"{name}: val accuracy " + ", ".join(f"{w:g}: {a:.4f}" for w, a in val.items())
              + (f" (held-out selection: step {final['selected_step']} of {total})" if "selected_step" in final else ""))
    log.close()
    final["val"] = val


@torch.no_grad()
def _validate(ctx: RunContext, accelerator, net: MetamorphicNet) -> dict[float, float]:
    """Held-out accuracy of the selected network at the ends of the training range (as
    evaluated: recalibrated when the BN strategy recalibrates)."""
    cfg, out = ctx.cfg, {}
    for w in sorted({cfg.meta.min_width, cfg.meta.max_width}):
        weights = network_at(net, w, 1, calibration_batch(ctx))
        out[w] = accuracy(lambda x: net(x, w, weights=weights)[0], ctx.splits.val, cfg.data.eval_batch_size,
                          accelerator)
    return out
