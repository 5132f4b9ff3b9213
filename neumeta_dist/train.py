"""The whole pipeline under Accelerate: teacher → smoothing → INR stages → width sweep.

Read `train_stage` top to bottom for one training step: every micro-batch samples a width
(the first of each step is the full width), generates the network at that width inside the
model's forward, and backpropagates CE/KD/reconstruction/L2 into the INR; after
`widths_per_step` micro-batches the optimiser steps once and the EMA follows.

Stages (recipe.py): stage 0 trains the teacher and smooths it; stage k ≥ 1 generates the
first k units of the plan, starting from stage k−1's selected (EMA) network. Each stage is
its own directory `stage_<k>/` with checkpoints and a `COMPLETE` marker written last.

Everything random in a step is a function of (seed, step, micro-batch, rank) and the data
order is a function of (seed, epoch), so a resumed run replays exactly what the
uninterrupted one would have done.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from .config import Config, ConfigError, load_config, save_config
from .data import DataError
from .data import Splits, load_splits
from .ema import EMA
from .execution import Execution
from .evaluate import accuracy, network_at, results_table, sweep, write_results
from .inr_init import initialise_stage, reconstruction_error, reconstruction_warmup
from .losses import step_losses
from .metamorphic import MetamorphicNet
from .models.resnet import ResNetFamily, Teacher
from .recipe import Stage, generated_layers, plan
from .runtime import Logger, make_accelerator, seed_everything, set_threads
from .teacher import build_reference, family_from_config, train_teacher


class StageError(RuntimeError):
    pass


def build_net(cfg: Config, family: ResNetFamily, reference: dict) -> MetamorphicNet:
    """The INR with a head for every tensor of the whole plan (all active until `activate`)."""
    return MetamorphicNet(family, reference, generated_layers(family, cfg.meta.generated), cfg.inr,
                          cfg.meta.scale, cfg.meta.norm, cfg.meta.train_head, cfg.meta.alpha_init)


def stage_plan(cfg: Config, family: ResNetFamily) -> tuple[Stage, ...]:
    return plan(family, cfg.meta.generated, cfg.recipe.incremental, cfg.recipe.units_per_stage)


def stage_dir(cfg: Config, k: int) -> Path:
    return Path(cfg.run_dir) / f"stage_{k}"


def steps_per_stage(cfg: Config, n_train: int) -> int:
    per_step = cfg.data.batch_size * cfg.train.widths_per_step
    return cfg.train.max_steps or max(1, int(cfg.train.epochs * n_train / per_step))


def is_seen(cfg: Config, fraction: float) -> bool:
    return cfg.meta.min_width - 1e-9 <= fraction <= cfg.meta.max_width + 1e-9


def step_rng(cfg: Config, step: int, micro: int, rank: int) -> tuple[float, torch.Generator]:
    """The width and the coordinate-noise generator of one micro-batch (stateless).

    Micro-batch 0 is the widest network; with `train.sandwich` micro-batch 1 is the narrowest
    (the sandwich rule of slimmable networks: the extremes bound every width in between);
    the rest are uniform in the training range.
    """
    key = f"{cfg.train.seed}/{step}/{micro}/{rank}"
    if micro == 0:
        fraction = cfg.meta.max_width
    elif micro == 1 and cfg.train.sandwich:
        fraction = cfg.meta.min_width
    else:
        fraction = random.Random(key).uniform(cfg.meta.min_width, cfg.meta.max_width)
    return fraction, torch.Generator().manual_seed(random.Random(key + "/noise").getrandbits(63))


def lr_lambda(cfg: Config, total: int):
    warm = cfg.train.warmup_steps

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.train.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(step - warm, total - warm) / max(1, total - warm)))
    return f


def batches(accelerator, loader, start_micro: int):
    """Endless micro-batches, starting `start_micro` batches into the (seeded) data order."""
    per_epoch = len(loader)
    epoch, skip = divmod(start_micro, per_epoch)
    while True:
        loader.set_epoch(epoch)
        it = accelerator.skip_first_batches(loader, skip) if skip else loader
        yield from it
        epoch, skip = epoch + 1, 0


def train_stage(cfg: Config, accelerator, splits: Splits, family: ResNetFamily, reference: dict,
                stages: tuple[Stage, ...], k: int, teacher: Teacher | None = None) -> dict:
    """Train (or resume) stage k; writes `final.pt` and `COMPLETE` last."""
    tc, micro_batches, stage, sdir = cfg.train, cfg.train.widths_per_step, stages[k - 1], stage_dir(cfg, k)
    accelerator.gradient_accumulation_steps = micro_batches
    model = _stage_start(cfg, family, reference, stages, k)
    resumed = ckpt.latest_checkpoint(sdir) is not None
    log = Logger(accelerator, Path(cfg.run_dir) / "tb" / sdir.name, steps_per_stage(cfg, len(splits.train)),
                 sdir.name)
    if not resumed:
        _initialise(cfg, model, stage, log)
    ex = Execution.from_config(tc)
    opt = torch.optim.AdamW(_param_groups(cfg, model), **ex.optimizer_kwargs(accelerator.device))
    loader = DataLoader(splits.train, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.data.num_workers)
    net, opt, loader = accelerator.prepare(model, opt, loader)
    model = accelerator.unwrap_model(net)
    total = steps_per_stage(cfg, len(splits.train))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
    ema = EMA(model, tc.ema_decay)
    if teacher is not None:
        teacher = teacher.to(accelerator.device).eval().requires_grad_(False)
    ex.prepare(model, teacher)

    start = _resume(accelerator, sdir, sched, ema, cfg)
    log.progress(start)
    data = batches(accelerator, loader, start * micro_batches)
    rank = accelerator.process_index
    for step in range(start, total):
        net.train()
        for micro in range(micro_batches):
            x, y = next(data)
            x = ex.batch(x)
            fraction, gen = step_rng(cfg, step, micro, rank)
            with accelerator.accumulate(net):
                with ex.autocast(accelerator.device):
                    logits, generated = net(x, fraction, generator=gen)
                    t_logits = teacher(x) if (teacher is not None and cfg.loss.kd > 0) else None
                terms = step_losses(cfg.loss, logits.float(), y, generated, model.reference, fraction == 1.0,
                                    None if t_logits is None else t_logits.float())
                accelerator.backward(terms["total"])
                if accelerator.sync_gradients and tc.grad_clip > 0:
                    _clip(accelerator, net, tc)
                opt.step()
                opt.zero_grad(set_to_none=True)
            log.count(len(x) * accelerator.num_processes)
            if micro == 0:  # kept on the device: reading them back here would sync every step
                full_terms = {f"loss/{n}": v.detach() for n, v in terms.items()}
        sched.step()
        ema.update(model)
        done = step + 1
        if done % tc.log_every == 0 or done == total:
            ips = log.throughput()
            full_terms = {n: v.item() for n, v in full_terms.items()}
            alphas = {f"alpha/{b}": a.item() for b, a in model.alphas().items()}
            log.scalars(done, {**full_terms, **alphas, "lr": sched.get_last_lr()[0], "images_per_s": ips})
            log.progress(done, loss=full_terms["loss/total"], img_s=ips)
        if tc.save_every and done % tc.save_every == 0 and done < total:
            _save(accelerator, sdir, done, sched, ema, cfg)
    val = _validate(cfg, accelerator, model, ema, splits)
    log.scalars(total, {f"val/accuracy@{w:g}": a for w, a in val.items()})
    log.print(f"{sdir.name}: val accuracy " + ", ".join(f"{w:g}: {a:.4f}" for w, a in val.items()))
    log.close()
    final = {"model": {n: v.cpu() for n, v in model.state_dict().items()}, "ema": ema.state_dict(),
             "config": cfg.to_dict(), "stage": k, "steps": total, "val": val}
    if accelerator.is_main_process:
        ckpt.atomic_torch_save(final, sdir / "final.pt")
        ckpt.mark_complete(sdir, {"steps": total, "val": val})
    accelerator.wait_for_everyone()
    return final


def _stage_start(cfg: Config, family: ResNetFamily, reference: dict, stages: tuple[Stage, ...],
                 k: int) -> MetamorphicNet:
    """Stage k's network before training: stage k−1's selected network, stage k's layers active."""
    net = build_net(cfg, family, reference["weights"])
    if k > 1:
        prev = load_trained(cfg, family, reference, stages, k - 1)
        net.load_state_dict(prev.state_dict())
    net.activate(stages[k - 1].layers)
    return net


def _param_groups(cfg: Config, model: MetamorphicNet) -> list[dict]:
    """INR, SkipInit scales and the shared classifier each with their own lr and decay."""
    tc = cfg.train
    groups = [dict(params=list(model.inr.parameters()), lr=tc.lr, weight_decay=tc.weight_decay),
              dict(params=list(model.alpha.parameters()), lr=tc.lr_alpha, weight_decay=tc.shared_weight_decay),
              dict(params=list(model.shared.parameters()), lr=tc.lr_head, weight_decay=tc.shared_weight_decay)]
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


def _clip(accelerator, net, tc) -> None:
    if tc.clip_mode == "value":
        accelerator.clip_grad_value_(net.parameters(), tc.grad_clip)
    else:
        accelerator.clip_grad_norm_(net.parameters(), tc.grad_clip)


def _save(accelerator, sdir, step, sched, ema, cfg) -> None:
    meta = {"config_digest": cfg.digest(), "world_size": accelerator.num_processes}
    ckpt.save_state(accelerator, sdir, step, meta, {"ema": ema.state_dict(), "sched": sched.state_dict()})
    if accelerator.is_main_process:
        ckpt.prune(sdir, cfg.train.keep_checkpoints)


def _resume(accelerator, sdir, sched, ema, cfg) -> int:
    latest = ckpt.latest_checkpoint(sdir)
    if latest is None:
        return 0
    meta = ckpt.read_meta(latest)
    if meta["config_digest"] != cfg.digest():
        raise ckpt.CheckpointError(f"{latest} was written by a different config; resume with the same "
                                   f"config or use a new run_dir")
    if meta["world_size"] != accelerator.num_processes:
        raise ckpt.CheckpointError(f"{latest} was written by {meta['world_size']} processes, this run has "
                                   f"{accelerator.num_processes}: relaunch with --num_processes {meta['world_size']}")
    accelerator.load_state(str(latest))
    ema.load_state_dict(ckpt.load_torch(latest / "ema.pt", "EMA state"))
    sched.load_state_dict(ckpt.load_torch(latest / "sched.pt", "scheduler state"))
    if accelerator.is_main_process:
        print(f"resuming {sdir.name} from {latest.name} (step {meta['step']})")
    return meta["step"]


@torch.no_grad()
def _validate(cfg, accelerator, model, ema, splits) -> dict[float, float]:
    """Held-out accuracy of the EMA network at the ends of the training range (as evaluated:
    recalibrated when meta.norm=recalib)."""
    live = {n: p.detach().clone() for n, p in model.named_parameters()}
    if cfg.eval.use_ema:
        ema.copy_to(model)
    model.eval()
    out = {}
    for w in sorted({cfg.meta.min_width, cfg.meta.max_width}):
        weights = network_at(model, w, 1, calibration_batch(cfg, splits))
        out[w] = accuracy(lambda x: model(x, w, weights=weights)[0], splits.val, cfg.data.eval_batch_size,
                          accelerator)
    for n, p in model.named_parameters():
        p.copy_(live[n])
    return out


def load_trained(cfg: Config, family: ResNetFamily, reference: dict, stages: tuple[Stage, ...],
                 k: int) -> MetamorphicNet:
    """Stage k's selected network (EMA weights unless eval.use_ema=false), stage k's layers active."""
    final = ckpt.load_torch(stage_dir(cfg, k) / "final.pt", f"stage {k} result")
    net = build_net(cfg, family, reference["weights"])
    net.load_state_dict(final["model"])
    if cfg.eval.use_ema:
        ema = EMA(net, final["ema"]["decay"])
        ema.load_state_dict(final["ema"])
        ema.copy_to(net)
    net.activate(stages[k - 1].layers)
    return net.eval()


def calibration_batch(cfg: Config, splits: Splits) -> torch.Tensor | None:
    """Training images for the per-width recalibration (meta.norm=recalib), else None."""
    return splits.train.tensors[0][:cfg.eval.calib_samples] if cfg.meta.norm == "recalib" else None


def completed_stages(cfg: Config, stages: tuple[Stage, ...]) -> int:
    """How many stages, counted from the first, are COMPLETE."""
    n = 0
    while n < len(stages) and ckpt.is_complete(stage_dir(cfg, n + 1)):
        n += 1
    return n


def evaluate_run(cfg: Config, accelerator, splits: Splits, family: ResNetFamily, reference: dict,
                 teacher_art: dict, stages: tuple[Stage, ...]) -> dict:
    """Width sweep of the last complete stage; writes results.{json,md} and the plot."""
    done = completed_stages(cfg, stages)
    if done == 0:
        raise StageError(f"{cfg.run_dir} has no COMPLETE stage: train stage 1 first")
    net = load_trained(cfg, family, reference, stages, done).to(accelerator.device)
    rows = sweep(net, cfg.eval.widths, splits.test, cfg.data.eval_batch_size, cfg.eval.samples,
                 lambda w: is_seen(cfg, w), accelerator, calibration_batch(cfg, splits))
    results = {"teacher": {"accuracy": teacher_art["accuracy"], "params": teacher_art["params"]},
               "widths": rows, "dataset": splits.name, "model": family.name, "recipe": cfg.recipe.name,
               "stages_completed": done, "stages_planned": len(stages),
               "generated_layers": net.generated_names(),
               "smoothing": {"tv_before": reference.get("tv_before"), "tv_after": reference.get("tv_after")}}
    if accelerator.is_main_process:
        write_results(Path(cfg.run_dir), results)
        from torch.utils.tensorboard import SummaryWriter
        with SummaryWriter(str(Path(cfg.run_dir) / "tb" / "eval")) as tb:
            for row in rows:  # x axis: width in per mille, so widths sort as numbers do
                tb.add_scalar("eval/accuracy_vs_width", row["accuracy"], round(1000 * row["width"]))
                tb.add_scalar("eval/compression_vs_width", row["compression"], round(1000 * row["width"]))
    return results


def run(cfg: Config, only_stage: int | None = None) -> dict | None:
    """The whole plan (skipping COMPLETE stages), or only `only_stage` (0 = the teacher)."""
    set_threads()
    accelerator = make_accelerator(cfg.train.seed)
    seed_everything(cfg.train.seed)
    run_dir = Path(cfg.run_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    splits = load_splits(cfg.data, cfg.train.seed)
    family = family_from_config(cfg, splits)
    stages = stage_plan(cfg, family)
    if only_stage is not None and not 0 <= only_stage <= len(stages):
        raise StageError(f"--stage {only_stage}: the plan has stages 0..{len(stages)} (see `neumeta-dist plan`)")
    if only_stage not in (None, 0) and not (run_dir / "teacher" / "reference.pt").is_file():
        raise StageError(f"stage 0 (teacher) of {run_dir} is not complete: run it first with --stage 0")
    teacher_art = train_teacher(cfg, accelerator, splits, family)
    reference = build_reference(cfg, accelerator, family, teacher_art, splits)
    if only_stage == 0:
        return None
    teacher = None
    if cfg.loss.kd > 0:
        teacher = Teacher(family)
        teacher.load_state_dict(teacher_art["state_dict"])
    for k in range(1, len(stages) + 1):
        if (only_stage is not None and k != only_stage) or ckpt.is_complete(stage_dir(cfg, k)):
            continue
        if k > 1 and not ckpt.is_complete(stage_dir(cfg, k - 1)):
            raise StageError(f"stage {k} needs stage {k - 1} COMPLETE ({stage_dir(cfg, k - 1)}): run "
                             f"`launch/train.py --config <cfg> --stage {k - 1}` first")
        seed_everything(cfg.train.seed + k)
        train_stage(cfg, accelerator, splits, family, reference, stages, k, teacher)
    results = None
    if only_stage is None or only_stage == len(stages):
        results = evaluate_run(cfg, accelerator, splits, family, reference, teacher_art, stages)
        if accelerator.is_main_process:
            print(results_table(results))
    accelerator.end_training()
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train a metamorphic network: the whole plan, or one stage.")
    p.add_argument("--config", required=True, help="experiment YAML, e.g. configs/demo.yaml")
    p.add_argument("--stage", type=int, default=None,
                   help="run only this stage (0 = teacher + smoothing); default: every remaining stage")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-3")
    args = p.parse_args(argv)
    try:
        run(load_config(args.config, args.overrides), args.stage)
    except (StageError, ckpt.CheckpointError, ConfigError, DataError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
