"""Queries on a run's trained stages: the network a stage selected, the last complete stage,
and the width sweep of it (`evaluate_run`, which writes results.{json,md}, the plot and the
`eval` TensorBoard scalars). Used by the CLI (eval, export), by training's hand-off from
one stage to the next, and by its held-out validation; none of them trains anything.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..config import Config
from ..core.metamorphic import MetamorphicNet
from ..data import sample_images
from ..evaluation.accuracy import by_split
from ..evaluation.calibration import Calibration, distinct_widths
from ..evaluation.results import write_results
from ..evaluation.sweep import sweep
from ..models.family import Family
from ..models.norms import norm_strategy
from ..recipe.stages import generated_layers, steps_per_stage
from ..recipe.widths import TrainingWidths
from ..records import evaluations, lineage, provenance
from ..run import RunDir, StageError
from .context import RunContext
from .ema import EMA


def build_net(cfg: Config, family: Family, reference: dict) -> MetamorphicNet:
    """The INR with a head for every tensor of the whole plan (all active until `activate`)."""
    return MetamorphicNet(family, reference, generated_layers(family, cfg.meta.generated), cfg.inr,
                          cfg.meta.scale, cfg.meta.norm, cfg.meta.train_head, cfg.meta.alpha_init,
                          cfg.meta.channel_coords == "nested")


def selected_network(ctx: RunContext, result: dict, layers) -> MetamorphicNet:
    """The network a stage result (final.pt or a consolidated checkpoint) selects: its EMA
    weights unless eval.use_ema=false, generating `layers`, in eval mode."""
    net = build_net(ctx.cfg, ctx.family, ctx.reference["weights"])
    net.load_state_dict(result["model"])
    if ctx.cfg.eval.use_ema:
        ema = EMA(net, result["ema"]["decay"])
        ema.load_state_dict(result["ema"])
        ema.copy_to(net)
    net.activate(layers)
    return net.eval()


def load_trained(ctx: RunContext, k: int) -> MetamorphicNet:
    """Stage k's selected network (EMA weights unless eval.use_ema=false), stage k's layers active."""
    final = ckpt.load_torch(ctx.run.final(k), f"stage {k} result")
    return selected_network(ctx, final, ctx.stages[k - 1].layers)


def result_network(ctx: RunContext, result: dict | None = None) -> tuple[MetamorphicNet, int]:
    """The network of `result` (a consolidated checkpoint), else of the last complete stage,
    and that stage's number."""
    if result is not None:
        done = result["stage"]
        return selected_network(ctx, result, ctx.stages[done - 1].layers), done
    done = ctx.completed_stages()
    if done == 0:
        raise StageError(f"{ctx.cfg.run_dir} has no COMPLETE stage: train stage 1 first")
    return load_trained(ctx, done), done


def calibration_batch(ctx: RunContext) -> torch.Tensor | None:
    """Training images for the per-width recalibration when the BN strategy recalibrates, else None."""
    if not norm_strategy(ctx.cfg.meta.norm).recalibrates:
        return None
    return sample_images(ctx.splits.train, ctx.cfg.eval.calib_samples)


def measure_calibration(ctx: RunContext, net: MetamorphicNet, stage: int, final: bool = True) -> Calibration:
    """The recalibration of every network the run keeps (`eval.calibrate`: every distinct one,
    or the evaluated widths'), on one calibration batch; `final`: of the stage's final.pt (a
    data-free reader uses only such), else of a consolidated checkpoint."""
    cfg = ctx.cfg
    widths = list(cfg.eval.widths) + (distinct_widths(net) if cfg.eval.calibrate == "all" else [])
    return Calibration.measure(net, widths, stage, cfg.eval.samples, calibration_batch(ctx),
                               ctx.splits.image_size, ctx.splits.in_channels, "final" if final else "checkpoint")


def evaluate_run(ctx: RunContext, accelerator, result: dict | None = None) -> dict:
    """Width sweep of the last complete stage (or of `result`, a consolidated checkpoint);
    writes its own file under evaluations/ and regenerates results.{json,md} and the plots
    from every evaluation of the run (records/evaluations.py). Returns this evaluation's results."""
    cfg, reference = ctx.cfg, ctx.reference
    net, done = result_network(ctx, result)
    net = net.to(accelerator.device)
    training = TrainingWidths.from_config(cfg.meta)
    held_out = held_out_splits(ctx)
    calibration = measure_calibration(ctx, net, done, result is None)
    if accelerator.is_main_process:  # before the sweep scores through it: then the two cannot differ
        calibration.save(ctx.run.calibration)
    rows = sweep(net, cfg.eval.widths, ctx.splits.test, cfg.data.eval_batch_size, cfg.eval.samples,
                 lambda w: training.describe(w, net.sizes, net.groups), accelerator, None,
                 ctx.splits.image_size, held_out, lambda w: calibration.weights(net, w))
    results = {"teacher": teacher_row(ctx, accelerator, held_out),
               "widths": rows, "dataset": ctx.splits.name, "model": ctx.family.name, "recipe": cfg.recipe.name,
               "stages_completed": done, "stages_planned": len(ctx.stages),
               "generated_layers": net.generated_names(),
               "storage": net.storage(),  # parameters the INR row keeps to emit every width
               # the digest of the keys and the commit that made the teacher and each stage
               "made_by": lineage.summary(ctx.run, done),
               "smoothing": {"tv_before": reference.get("tv_before"), "tv_after": reference.get("tv_after")},
               **provenance.record(config=cfg.to_dict(), seed=cfg.train.seed,
                                   steps_per_stage=steps_per_stage(cfg, len(ctx.splits.train)),
                                   train_widths=list(training.discrete) or [training.low, training.high],
                                   wall_s=_wall_times(ctx, done))}
    if accelerator.is_main_process:  # this evaluation's own file, then the merged view of all of them
        network = evaluations.network_of(ctx.run, done, result.get("file") if result else None)
        write_results(ctx.run.root, evaluations.add(ctx.run, results, evaluations.way(cfg, network)))
        _log_sweep(ctx.run, rows, cfg)
    return results


def held_out_splits(ctx: RunContext) -> dict:
    """The held-out splits `eval.splits` asks to score beside test (val, final)."""
    return ctx.splits.held_out(ctx.cfg.eval.splits)


def teacher_row(ctx: RunContext, accelerator, held_out: dict) -> dict:
    """results.json's `teacher`: its test accuracy as stage 0 measured it, its parameters, and
    (with held-out splits asked for) its accuracy on each split, scored here."""
    row = {"accuracy": ctx.teacher["accuracy"], "params": ctx.teacher["params"]}
    if held_out:
        from .teacher import teacher_network
        row["by_split"] = by_split(teacher_network(ctx.family, ctx.teacher).to(accelerator.device), ctx.splits.test, held_out,
                                   ctx.cfg.data.eval_batch_size, accelerator)
    return row


def _wall_times(ctx: RunContext, done: int) -> dict[str, float]:
    """Seconds each finished stage took (its last attempt; "0" = the teacher), where recorded."""
    out = {"0": ctx.teacher["wall_s"]} if "wall_s" in ctx.teacher else {}
    for k in range(1, done + 1):
        info = ckpt.complete_info(ctx.stage_dir(k))
        if "wall_s" in info:
            out[str(k)] = info["wall_s"]
    return out


def _log_sweep(run: RunDir, rows: list[dict], cfg: Config) -> None:
    from .tracking import close, log, open_trackers
    trackers = open_trackers(cfg.train.log_with, run.root, "eval", cfg.to_dict())
    for row in rows:  # x axis: width in per mille, so widths sort as numbers do
        log(trackers, {"eval/accuracy_vs_width": row["accuracy"], "eval/compression_vs_width": row["compression"]},
            round(1000 * row["width"]))
    close(trackers)


def open_run(run: Path, overrides: list[str], result: dict | None = None) -> RunContext:
    """The context of a trained run directory, teacher and reference included (which must
    have a finished stage unless `result`, a consolidated checkpoint, replaces it); errors
    say which step of training is missing."""
    from ..config import load_config
    from .teacher import load_teacher

    paths = RunDir(run)
    if not paths.config.is_file():
        raise SystemExit(f"error: {paths.config} not found: --run must be a run directory written by training")
    # files=False: a checkpoint it resumed from may be pruned since; the teacher is checked below
    ctx = RunContext.load(load_config(paths.config, overrides, files=False))
    if result is None and ctx.completed_stages() == 0:
        raise SystemExit(f"error: {run} has no finished stage (no stage_1/COMPLETE): finish training first")
    teacher = load_teacher(ctx.cfg, ctx.family)  # a run trained with `teacher.checkpoint` has no copy of its own
    if teacher is None:
        raise SystemExit(f"error: {ctx.run.teacher} not found and teacher.checkpoint is unset: "
                         "run stage 0 (`launch/train.py --stage 0`) first")
    if teacher["accuracy"] is None:  # a zoo teacher (teacher.checkpoint) that stage 0 never scored here
        raise SystemExit(f"error: {ctx.run.teacher} not found: run stage 0 (`launch/train.py --stage 0`) to "
                         f"score and keep the teacher {ctx.cfg.teacher.checkpoint}")
    return ctx.with_teacher(teacher, ckpt.load_torch(ctx.run.reference, "teacher reference"))
