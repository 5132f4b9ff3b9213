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
import shutil
import sys
import time
from pathlib import Path

import torch
from . import checkpoint as ckpt
from . import parallel, preemption, provenance
from .config import Config, ConfigError, load_config, save_config
from .data import DataError
from .data import Splits, load_splits, sample_images, train_batches
from .ema import EMA
from .execution import Execution
from .evaluate import accuracy, network_at, results_table, sweep, write_results
from .inr_init import initialise_stage, reconstruction_error, reconstruction_warmup
from .losses import step_losses
from .metamorphic import MetamorphicNet
from .models.resnet import ResNetFamily, Teacher
from .generation import generation_strategy
from .probe import Probe
from .recipe import Stage, generated_layers, plan
from .selection import Selection
from .widths import TrainingWidths
from .runtime import Logger, make_accelerator, seed_everything, set_threads
from .teacher import build_reference, family_from_config, train_teacher


class StageError(RuntimeError):
    pass


def build_net(cfg: Config, family: ResNetFamily, reference: dict) -> MetamorphicNet:
    """The INR with a head for every tensor of the whole plan (all active until `activate`)."""
    return MetamorphicNet(family, reference, generated_layers(family, cfg.meta.generated), cfg.inr,
                          cfg.meta.scale, cfg.meta.norm, cfg.meta.train_head, cfg.meta.alpha_init,
                          cfg.meta.channel_coords == "nested")


def stage_plan(cfg: Config, family: ResNetFamily) -> tuple[Stage, ...]:
    return plan(family, cfg.meta.generated, cfg.recipe.incremental, cfg.recipe.units_per_stage)


def stage_dir(cfg: Config, k: int) -> Path:
    return Path(cfg.run_dir) / f"stage_{k}"


def steps_per_stage(cfg: Config, n_train: int) -> int:
    per_step = cfg.data.batch_size * cfg.train.widths_per_step
    return cfg.train.max_steps or max(1, int(cfg.train.epochs * n_train / per_step))


def step_rng(cfg: Config, step: int, micro: int, rank: int) -> tuple[float, torch.Generator]:
    """The width and the coordinate-noise generator of one micro-batch (stateless).

    Micro-batch 0 is the widest network; with `train.sandwich` micro-batch 1 is the narrowest
    (the sandwich rule of slimmable networks: the extremes bound every width in between);
    the rest are drawn from the training range or set (widths.py). `step` counts from the
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


def train_stage(cfg: Config, accelerator, splits: Splits, family: ResNetFamily, reference: dict,
                stages: tuple[Stage, ...], k: int, teacher: Teacher | None = None) -> dict:
    """Train (or resume) stage k; writes `final.pt` and `COMPLETE` last."""
    t0 = time.perf_counter()
    tc, micro_batches, stage, sdir = cfg.train, cfg.train.widths_per_step, stages[k - 1], stage_dir(cfg, k)
    parallel.configure(accelerator, micro_batches, tc.grad_clip, tc.clip_mode, cfg.data.batch_size)
    stop = preemption.Preemption.watch()  # from here a SLURM signal stops the stage at a step boundary
    resume_from = resume_point(cfg, accelerator, sdir)
    # On the accelerator before the warm-up: it is thousands of small INR steps.
    model = _stage_start(cfg, family, reference, stages, k).to(accelerator.device)
    parallel.freeze_unused(model, list(model.alphas().values()))
    total = steps_per_stage(cfg, len(splits.train))
    log = Logger(accelerator, Path(cfg.run_dir) / "tb" / sdir.name, total, sdir.name)
    if resume_from is None:
        _initialise(cfg, model, stage, log)
    ex = Execution.from_config(tc)
    opt = torch.optim.AdamW(_param_groups(cfg, model), **ex.optimizer_kwargs(accelerator.device))
    net, opt = accelerator.prepare(model, opt)
    model = accelerator.unwrap_model(net)
    parallel.register_external_parameters(accelerator, model)
    model.generation = generation_strategy(tc.generation)
    log.print(f"{sdir.name}: weight generation {model.generation}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
    with parallel.gathered(accelerator, model):
        ema = EMA(model, tc.ema_decay)
    if teacher is not None:
        teacher = parallel.prepare_teacher(accelerator, teacher, tc.teacher_mode)
    ex.prepare(model, teacher)

    start = _resume(accelerator, resume_from, sched, ema, cfg) if resume_from is not None else 0
    log.progress(start)
    offset = stream_offset(cfg, k, total)
    data = train_batches(cfg, accelerator, splits.train, (offset + start) * micro_batches)
    select = Selection(sdir, tc.select_every, cfg.digest())
    probe = Probe(k, accelerator.process_index)
    probe.start(lambda: parallel.full_state_dict(accelerator, model))
    for step in range(start, total):
        full_terms = train_step(cfg, accelerator, net, opt, data, offset + step, ex, teacher, probe)
        log.count(micro_batches * cfg.data.batch_size * accelerator.num_processes)
        sched.step()
        with parallel.gathered(accelerator, model):
            ema.update(model)
        done = step + 1
        if done % tc.log_every == 0 or done == total:
            ips = log.throughput()
            full_terms = {n: v.item() for n, v in full_terms.items()}
            with parallel.gathered(accelerator, model):
                alphas = {f"alpha/{b}": a.item() for b, a in model.alphas().items()}
            log.scalars(done, {**full_terms, **alphas, "lr": sched.get_last_lr()[0], "images_per_s": ips,
                               **data.fault_scalars()})
            log.progress(done, loss=full_terms["loss/total"], img_s=ips)
        if select.due(done, total):
            _offer(cfg, accelerator, model, ema, family, reference, stage, splits, select, log, done)
        if stop.requested(accelerator) and done < total:  # preempted or near the time limit
            _save(accelerator, sdir, done, sched, ema, cfg, data.per_epoch)
            log.close()
            stop.exit(f"{sdir.name} step {done}")
        if (tc.save_every and done % tc.save_every == 0) or done == total:
            _save(accelerator, sdir, done, sched, ema, cfg, data.per_epoch)
        probe.step_done(done)
    final = {"model": parallel.full_state_dict(accelerator, model), "ema": ema.state_dict(cpu=True),
             "config": cfg.to_dict(), "stage": k, "steps": total}
    probe.final(final["model"], final["ema"], parallel.local_numel(model))
    probe.close()
    if select.best is not None:  # the best held-out candidate is the stage's result
        best = select.best
        final.update(model=best["model"], ema=best["ema"], selected_step=best["step"])
        val = best["val"]
    else:
        selected = selected_network(cfg, family, reference, final, stage.layers).to(accelerator.device)
        val = _validate(cfg, accelerator, selected, splits)
        log.scalars(total, {f"val/accuracy@{w:g}": a for w, a in val.items()})
    log.print(f"{sdir.name}: val accuracy " + ", ".join(f"{w:g}: {a:.4f}" for w, a in val.items())
              + (f" (held-out selection: step {final['selected_step']} of {total})" if "selected_step" in final else ""))
    log.close()
    final["val"] = val
    if accelerator.is_main_process:
        ckpt.atomic_torch_save(final, sdir / "final.pt")
        ckpt.mark_complete(sdir, {"steps": total, "val": val, "wall_s": round(time.perf_counter() - t0, 1)})
    accelerator.wait_for_everyone()
    return final


def train_step(cfg: Config, accelerator, net, opt, data, step: int, ex: Execution, teacher=None,
               probe: Probe | None = None) -> dict[str, torch.Tensor]:
    """One optimiser step: `train.widths_per_step` micro-batches, each at its own width (the
    first at full width), gradients accumulated; returns the full-width micro-batch's losses,
    still on the device (reading them back here would sync every step)."""
    model, rank = accelerator.unwrap_model(net), accelerator.process_index
    net.train()
    full_weights = None  # the step's full-width network, source of in-place distillation
    for micro in range(cfg.train.widths_per_step):
        x, y = next(data)
        if probe is not None:
            probe.batch(step, micro, x)
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
            full_terms = {f"loss/{n}": v.detach() for n, v in terms.items()}
            if cfg.loss.inplace_kd > 0 and fraction == 1.0:
                full_weights = {n: w.detach() for n, w in generated.items()}
    return full_terms


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


def _offer(cfg, accelerator, model, ema, family, reference, stage, splits, select, log, step: int) -> None:
    """Score the EMA network on the held-out split and offer it to the stage's selection."""
    candidate = {"model": parallel.full_state_dict(accelerator, model), "ema": ema.state_dict(cpu=True)}
    net = selected_network(cfg, family, reference, candidate, stage.layers).to(accelerator.device)
    val = _validate(cfg, accelerator, net, splits)
    kept = select.offer(step, val, candidate, accelerator.is_main_process)
    log.scalars(step, {**{f"val/accuracy@{w:g}": a for w, a in val.items()}, "val/kept": float(kept)})


def _save(accelerator, sdir, step, sched, ema, cfg, batches_per_epoch: int) -> None:
    micro = step * cfg.train.widths_per_step
    meta = {"config_digest": cfg.digest(), "world_size": accelerator.num_processes,
            "mode": parallel.mode(accelerator),
            "data": {"micro_batches": micro, "epoch": micro // batches_per_epoch,
                     "batches_per_epoch": batches_per_epoch, "batch_size": cfg.data.batch_size}}
    ckpt.save_state(accelerator, sdir, step, meta, {"ema": ema.state_dict(cpu=True), "sched": sched.state_dict()})
    if accelerator.is_main_process:
        ckpt.prune(sdir, cfg.train.keep_checkpoints)


def resume_point(cfg: Config, accelerator, sdir: Path) -> Path | None:
    """The checkpoint stage `sdir` resumes from (`train.resume`), or None to start it afresh.

    `none` deletes the stage's earlier checkpoints, so that a later `auto` cannot pick one of
    them over the new run's; a named checkpoint applies to its own stage only.
    """
    how = cfg.train.resume
    if how == "none":
        if accelerator.is_main_process:
            if ckpt.checkpoints(sdir):
                print(f"train.resume=none: deleting the checkpoints of {sdir}")
            for old in ckpt.checkpoints(sdir):
                shutil.rmtree(old)
            Selection.forget(sdir)
        accelerator.wait_for_everyone()
        return None
    if how != "auto" and Path(how).resolve().parent == sdir.resolve():
        return ckpt.named_checkpoint(Path(how))
    return ckpt.latest_checkpoint(sdir)


def _resume(accelerator, latest: Path, sched, ema, cfg) -> int:
    meta = ckpt.read_meta(latest)
    if meta["config_digest"] != cfg.digest():
        raise ckpt.CheckpointError(f"{latest} was written by a different config; resume with the same "
                                   f"config or use a new run_dir")
    if meta["world_size"] != accelerator.num_processes:
        # The data position is counted in per-rank batches and ZeRO shards are per rank:
        # neither maps onto another world size without resharding.
        raise ckpt.CheckpointError(f"{latest} was written by {meta['world_size']} processes, this run has "
                                   f"{accelerator.num_processes}: relaunch with --num_processes {meta['world_size']} "
                                   f"(or `neumeta-dist consolidate` it and start a new run from the file)")
    if meta.get("mode", parallel.mode(accelerator)) != parallel.mode(accelerator):
        raise ckpt.CheckpointError(f"{latest} was written under {meta['mode']}, this run is "
                                   f"{parallel.mode(accelerator)}: relaunch with the same accelerate config")
    try:
        accelerator.load_state(str(latest))
    except Exception as e:  # a shard that passed the manifest but does not load
        raise ckpt.CheckpointError(f"{latest} does not load ({type(e).__name__}: {e}); delete it to resume "
                                   "from the one before") from None
    ema.load_state_dict(ckpt.load_torch(latest / "ema.pt", "EMA state"))
    sched.load_state_dict(ckpt.load_torch(latest / "sched.pt", "scheduler state"))
    if accelerator.is_main_process:
        print(f"resuming {latest.parent.name} from {latest.name} (step {meta['step']})")
    return meta["step"]


@torch.no_grad()
def _validate(cfg, accelerator, net: MetamorphicNet, splits) -> dict[float, float]:
    """Held-out accuracy of the selected network at the ends of the training range (as
    evaluated: recalibrated when meta.norm=recalib)."""
    out = {}
    for w in sorted({cfg.meta.min_width, cfg.meta.max_width}):
        weights = network_at(net, w, 1, calibration_batch(cfg, splits))
        out[w] = accuracy(lambda x: net(x, w, weights=weights)[0], splits.val, cfg.data.eval_batch_size,
                          accelerator)
    return out


def selected_network(cfg: Config, family: ResNetFamily, reference: dict, result: dict,
                     layers) -> MetamorphicNet:
    """The network a stage result (final.pt or a consolidated checkpoint) selects: its EMA
    weights unless eval.use_ema=false, generating `layers`, in eval mode."""
    net = build_net(cfg, family, reference["weights"])
    net.load_state_dict(result["model"])
    if cfg.eval.use_ema:
        ema = EMA(net, result["ema"]["decay"])
        ema.load_state_dict(result["ema"])
        ema.copy_to(net)
    net.activate(layers)
    return net.eval()


def load_trained(cfg: Config, family: ResNetFamily, reference: dict, stages: tuple[Stage, ...],
                 k: int) -> MetamorphicNet:
    """Stage k's selected network (EMA weights unless eval.use_ema=false), stage k's layers active."""
    final = ckpt.load_torch(stage_dir(cfg, k) / "final.pt", f"stage {k} result")
    return selected_network(cfg, family, reference, final, stages[k - 1].layers)


def calibration_batch(cfg: Config, splits: Splits) -> torch.Tensor | None:
    """Training images for the per-width recalibration (meta.norm=recalib), else None."""
    return sample_images(splits.train, cfg.eval.calib_samples) if cfg.meta.norm == "recalib" else None


def completed_stages(cfg: Config, stages: tuple[Stage, ...]) -> int:
    """How many stages, counted from the first, are COMPLETE."""
    n = 0
    while n < len(stages) and ckpt.is_complete(stage_dir(cfg, n + 1)):
        n += 1
    return n


def evaluate_run(cfg: Config, accelerator, splits: Splits, family: ResNetFamily, reference: dict,
                 teacher_art: dict, stages: tuple[Stage, ...], result: dict | None = None) -> dict:
    """Width sweep of the last complete stage (or of `result`, a consolidated checkpoint);
    writes results.{json,md} and the plot."""
    if result is not None:
        done = result["stage"]
        net = selected_network(cfg, family, reference, result, stages[done - 1].layers)
    else:
        done = completed_stages(cfg, stages)
        if done == 0:
            raise StageError(f"{cfg.run_dir} has no COMPLETE stage: train stage 1 first")
        net = load_trained(cfg, family, reference, stages, done)
    net = net.to(accelerator.device)
    training = TrainingWidths.from_config(cfg.meta)
    rows = sweep(net, cfg.eval.widths, splits.test, cfg.data.eval_batch_size, cfg.eval.samples,
                 lambda w: training.describe(w, net.sizes, net.groups), accelerator, calibration_batch(cfg, splits))
    results = {"teacher": {"accuracy": teacher_art["accuracy"], "params": teacher_art["params"]},
               "widths": rows, "dataset": splits.name, "model": family.name, "recipe": cfg.recipe.name,
               "stages_completed": done, "stages_planned": len(stages),
               "generated_layers": net.generated_names(),
               "smoothing": {"tv_before": reference.get("tv_before"), "tv_after": reference.get("tv_after")},
               **provenance.record(config=cfg.to_dict(), seed=cfg.train.seed,
                                   steps_per_stage=steps_per_stage(cfg, len(splits.train)),
                                   train_widths=list(training.discrete) or [training.low, training.high],
                                   wall_s=_wall_times(cfg, done, teacher_art))}
    if accelerator.is_main_process:
        write_results(Path(cfg.run_dir), results)
        from torch.utils.tensorboard import SummaryWriter
        with SummaryWriter(str(Path(cfg.run_dir) / "tb" / "eval")) as tb:
            for row in rows:  # x axis: width in per mille, so widths sort as numbers do
                tb.add_scalar("eval/accuracy_vs_width", row["accuracy"], round(1000 * row["width"]))
                tb.add_scalar("eval/compression_vs_width", row["compression"], round(1000 * row["width"]))
    return results


def _wall_times(cfg: Config, done: int, teacher_art: dict) -> dict:
    """Seconds each finished stage took (its last attempt; "0" = the teacher, where recorded)."""
    import json
    out = {"0": teacher_art["wall_s"]} if "wall_s" in teacher_art else {}
    for k in range(1, done + 1):
        info = json.loads((stage_dir(cfg, k) / ckpt.COMPLETE).read_text() or "{}")
        if "wall_s" in info:
            out[str(k)] = info["wall_s"]
    return out


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
    _check_resume_target(cfg, stages)
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


def _check_resume_target(cfg: Config, stages: tuple[Stage, ...]) -> None:
    """A named `train.resume` must be a whole checkpoint of one of this run's stages (fail early)."""
    how = cfg.train.resume
    if how in ("auto", "none"):
        return
    path = ckpt.named_checkpoint(Path(how))
    if path.resolve().parent not in {stage_dir(cfg, k).resolve() for k in range(1, len(stages) + 1)}:
        raise ckpt.CheckpointError(f"train.resume={how}: not a checkpoint of {cfg.run_dir} (expected "
                                   f"{cfg.run_dir}/stage_<k>/checkpoint_<step>)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train a metamorphic network: the whole plan, or one stage.")
    p.add_argument("--config", required=True, help="experiment YAML, e.g. configs/demo.yaml")
    p.add_argument("--stage", type=int, default=None,
                   help="run only this stage (0 = teacher + smoothing); default: every remaining stage")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-3")
    args = p.parse_intermixed_args(argv)  # `--stage k` may follow the overrides
    try:
        run(load_config(args.config, args.overrides), args.stage)
    except (StageError, ckpt.CheckpointError, ConfigError, DataError, parallel.ParallelError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
