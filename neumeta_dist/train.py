"""The whole pipeline under Accelerate: teacher → smoothing → INR stage(s) → width sweep.

Read `train_stage` top to bottom for one training step: every micro-batch samples a width
(the first of each step is the full width), generates the network at that width inside the
model's forward, and backpropagates CE/KD/reconstruction/L2 into the INR; after
`widths_per_step` micro-batches the optimiser steps once and the EMA follows.

Everything random in a step is a function of (seed, step, micro-batch, rank) and the data
order is a function of (seed, epoch), so a resumed run replays exactly what the
uninterrupted one would have done.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from .config import Config, load_config, save_config
from .data import Splits, load_splits
from .ema import EMA
from .evaluate import accuracy, sweep, write_results
from .inr_init import reconstruction_error, reconstruction_warmup
from .losses import step_losses
from .metamorphic import MetamorphicNet
from .models.resnet import ResNetFamily, Teacher
from .recipe import generated_layers, metamorphic_groups
from .runtime import Logger, make_accelerator, seed_everything, set_threads
from .teacher import build_reference, family_from_config, train_teacher

RECIPE_NAMES = {"all": "neumeta_all_layers", "last_block": "neumeta_last_block"}


def build_net(cfg: Config, family: ResNetFamily, reference: dict) -> MetamorphicNet:
    gen = generated_layers(family, cfg.meta.generated)
    groups = metamorphic_groups(family, gen, cfg.meta.scale)
    return MetamorphicNet(family, reference, gen, groups, cfg.inr, cfg.meta.residual)


def is_seen(cfg: Config, fraction: float) -> bool:
    return cfg.meta.min_width - 1e-9 <= fraction <= cfg.meta.max_width + 1e-9


def step_rng(cfg: Config, step: int, micro: int, rank: int) -> tuple[float, torch.Generator]:
    """The width and the coordinate-noise generator of one micro-batch (stateless)."""
    key = f"{cfg.train.seed}/{step}/{micro}/{rank}"
    fraction = 1.0 if micro == 0 else random.Random(key).uniform(cfg.meta.min_width, cfg.meta.max_width)
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
                stage_dir: Path, teacher: Teacher | None = None) -> dict:
    """Train (or resume) one INR stage; writes `final.pt` and `COMPLETE` last."""
    tc, k = cfg.train, cfg.train.widths_per_step
    accelerator.gradient_accumulation_steps = k
    net = build_net(cfg, family, reference["weights"])
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    loader = DataLoader(splits.train, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.data.num_workers)
    net, opt, loader = accelerator.prepare(net, opt, loader)
    model = accelerator.unwrap_model(net)
    total = tc.max_steps or max(1, int(tc.epochs * len(loader) / k))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
    ema = EMA(model, tc.ema_decay)
    if teacher is not None:
        teacher = teacher.to(accelerator.device).eval().requires_grad_(False)

    start = _resume(accelerator, stage_dir, sched, ema, cfg)
    log = Logger(accelerator, Path(cfg.run_dir) / "tb" / stage_dir.name, total, stage_dir.name, start)
    if start == 0:
        _initialise(cfg, model, ema, log)
    data = batches(accelerator, loader, start * k)
    rank = accelerator.process_index
    for step in range(start, total):
        net.train()
        for micro in range(k):
            x, y = next(data)
            fraction, gen = step_rng(cfg, step, micro, rank)
            with accelerator.accumulate(net):
                logits, generated = net(x, fraction, generator=gen)
                t_logits = teacher(x) if (teacher is not None and cfg.loss.kd > 0) else None
                terms = step_losses(cfg.loss, logits, y, generated, model.reference, fraction == 1.0, t_logits)
                accelerator.backward(terms["total"])
                if accelerator.sync_gradients and tc.grad_clip > 0:
                    _clip(accelerator, net, tc)
                opt.step()
                opt.zero_grad(set_to_none=True)
            log.count(len(x) * accelerator.num_processes)
            if micro == 0:
                full_terms = {f"loss/{n}": v.item() for n, v in terms.items()}
        sched.step()
        ema.update(model)
        done = step + 1
        if done % tc.log_every == 0 or done == total:
            ips = log.throughput()
            log.scalars(done, {**full_terms, "lr": sched.get_last_lr()[0], "images_per_s": ips})
            log.progress(done, loss=full_terms["loss/total"], img_s=ips)
        if tc.save_every and done % tc.save_every == 0 and done < total:
            _save(accelerator, stage_dir, done, sched, ema, cfg)
    val = _validate(cfg, accelerator, model, ema, splits)
    log.scalars(total, {f"val/accuracy@{w:g}": a for w, a in val.items()})
    log.print(f"{stage_dir.name}: val accuracy " + ", ".join(f"{w:g}: {a:.4f}" for w, a in val.items()))
    log.close()
    final = {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "ema": ema.state_dict(),
             "config": cfg.to_dict(), "steps": total, "val": val}
    if accelerator.is_main_process:
        ckpt.atomic_torch_save(final, stage_dir / "final.pt")
        ckpt.mark_complete(stage_dir, {"steps": total, "val": val})
    accelerator.wait_for_everyone()
    return final


def _initialise(cfg: Config, model: MetamorphicNet, ema: EMA, log: Logger) -> None:
    """Reconstruction warm-up (if configured), then log how far the INR is from the teacher."""
    fractions = [1.0, 1.0, cfg.meta.max_width, (cfg.meta.min_width + cfg.meta.max_width) / 2, cfg.meta.min_width]
    reconstruction_warmup(model, cfg.train.recon_warmup_steps, cfg.train.recon_warmup_lr, fractions,
                          cfg.loss.recon_weighting,
                          log=lambda s, e: log.scalars(s, {"init/warmup_recon_mse": e}))
    ema.shadow = {k: p.detach().clone() for k, p in model.named_parameters()}
    errors = {f: reconstruction_error(model, f) for f in sorted(set(fractions))}
    log.scalars(0, {f"init/recon_mse@{f:g}": e for f, e in errors.items()})
    log.print("INR start: reconstruction MSE " + ", ".join(f"{f:g}: {e:.3e}" for f, e in errors.items()))


def _clip(accelerator, net, tc) -> None:
    if tc.clip_mode == "value":
        accelerator.clip_grad_value_(net.parameters(), tc.grad_clip)
    else:
        accelerator.clip_grad_norm_(net.parameters(), tc.grad_clip)


def _save(accelerator, stage_dir, step, sched, ema, cfg) -> None:
    meta = {"config_digest": cfg.digest(), "world_size": accelerator.num_processes}
    ckpt.save_state(accelerator, stage_dir, step, meta, {"ema": ema.state_dict(), "sched": sched.state_dict()})
    if accelerator.is_main_process:
        ckpt.prune(stage_dir, cfg.train.keep_checkpoints)


def _resume(accelerator, stage_dir, sched, ema, cfg) -> int:
    latest = ckpt.latest_checkpoint(stage_dir)
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
        print(f"resuming {stage_dir.name} from {latest.name} (step {meta['step']})")
    return meta["step"]


@torch.no_grad()
def _validate(cfg, accelerator, model, ema, splits) -> dict[float, float]:
    """Held-out accuracy of the EMA network at the ends of the training range."""
    live = {k: p.detach().clone() for k, p in model.named_parameters()}
    if cfg.eval.use_ema:
        ema.copy_to(model)
    model.eval()
    out = {}
    for w in sorted({cfg.meta.min_width, cfg.meta.max_width}):
        weights = model.generate(w)
        out[w] = accuracy(lambda x: model(x, w, weights=weights)[0], splits.val, cfg.data.eval_batch_size,
                          accelerator)
    for k, p in model.named_parameters():
        p.copy_(live[k])
    return out


def load_trained(cfg: Config, family: ResNetFamily, reference: dict, stage_dir: Path) -> MetamorphicNet:
    """The evaluated network of a finished stage (EMA weights unless eval.use_ema=false)."""
    final = ckpt.load_torch(stage_dir / "final.pt", "stage result")
    net = build_net(cfg, family, reference["weights"])
    net.load_state_dict(final["model"])
    if cfg.eval.use_ema:
        _copy_ema(net, final["ema"])
    return net.eval()


def _copy_ema(net, state) -> None:
    ema = EMA(net, state["decay"])
    ema.load_state_dict(state)
    ema.copy_to(net)


def evaluate_run(cfg: Config, accelerator, splits: Splits, family: ResNetFamily, reference: dict,
                 teacher_art: dict, stage_dir: Path, stages_completed: int) -> dict:
    net = load_trained(cfg, family, reference, stage_dir).to(accelerator.device)
    rows = sweep(net, cfg.eval.widths, splits.test, cfg.data.eval_batch_size, cfg.eval.samples,
                 lambda w: is_seen(cfg, w), accelerator)
    results = {"teacher": {"accuracy": teacher_art["accuracy"], "params": teacher_art["params"]},
               "widths": rows, "dataset": splits.name, "model": family.name,
               "recipe": RECIPE_NAMES[cfg.meta.generated], "stages_completed": stages_completed,
               "generated_layers": [n for l in net.generated for n in (f"{l.name}.weight", f"{l.name}.bias")],
               "smoothing": {"tv_before": reference.get("tv_before"), "tv_after": reference.get("tv_after")}}
    if accelerator.is_main_process:
        write_results(Path(cfg.run_dir), results)
    return results


def run(cfg: Config) -> dict:
    set_threads()
    accelerator = make_accelerator(cfg.train.seed)
    seed_everything(cfg.train.seed)
    run_dir = Path(cfg.run_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    splits = load_splits(cfg.data, cfg.train.seed)
    family = family_from_config(cfg, splits)
    teacher_art = train_teacher(cfg, accelerator, splits, family)
    reference = build_reference(cfg, accelerator, family, teacher_art, splits)
    teacher = None
    if cfg.loss.kd > 0:
        teacher = Teacher(family)
        teacher.load_state_dict(teacher_art["state_dict"])
    stage_dir = run_dir / "stage_0"
    if not ckpt.is_complete(stage_dir):
        seed_everything(cfg.train.seed)
        train_stage(cfg, accelerator, splits, family, reference, stage_dir, teacher)
    results = evaluate_run(cfg, accelerator, splits, family, reference, teacher_art, stage_dir, 1)
    if accelerator.is_main_process:
        from .evaluate import results_table
        print(results_table(results))
    accelerator.end_training()
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train a metamorphic network (the whole pipeline).")
    p.add_argument("--config", required=True, help="experiment YAML, e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-3")
    args = p.parse_args(argv)
    run(load_config(args.config, args.overrides))


if __name__ == "__main__":
    main(sys.argv[1:])
