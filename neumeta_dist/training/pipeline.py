"""The whole pipeline under Accelerate: teacher → smoothing → INR stages → width sweep.

`run` builds the run context once, runs stage 0 (training/teacher.py), then every INR stage not yet
COMPLETE (training/loop.py, in order, each from its predecessor's result), then the width sweep of
the last one (training/trained.py). `launch/train.py` and `neumeta-dist train` call `main`.
"""
from __future__ import annotations

import os
import sys

from .. import checkpoint as ckpt
from .. import options as opt
from ..config import Config, ConfigError, config_text, load_config, save_config
from ..data import DataError
from ..distributed import data_parallel as parallel
from ..distributed.accelerator import make_accelerator
from ..evaluation.results import results_table
from ..records import lineage
from ..run import RunDir, StageError
from . import probe
from .checkpointer import Checkpointer
from .context import RunContext
from .loop import train_stage
from .process import seed_everything, set_threads
from .teacher import build_reference, teacher_network, train_teacher
from .trained import evaluate_run


def run(cfg: Config, only_stage: int | None = None, restart_from: int | None = None) -> dict | None:
    """The whole plan (skipping COMPLETE stages), or only `only_stage` (0 = the teacher);
    `restart_from`: first delete artefact k and every later one (records/lineage.py)."""
    set_threads()
    accelerator = make_accelerator()
    seed_everything(cfg.train.seed)
    ctx = _context(cfg, accelerator, only_stage, restart_from)
    teacher_done = ctx.run.stage_complete(0)
    art = train_teacher(cfg, accelerator, ctx.splits, ctx.family, probe.from_env(0, accelerator.process_index))
    ctx = ctx.with_teacher(art, build_reference(cfg, accelerator, ctx.family, art, ctx.splits))
    if not teacher_done and accelerator.is_main_process:  # made here and now: its record says so
        lineage.mark_teacher(ctx.run, cfg)
    if only_stage == 0:
        return None
    teacher = None
    if cfg.loss.kd > 0:
        teacher = teacher_network(ctx.family, ctx.teacher)
    for k in range(1, len(ctx.stages) + 1):
        if (only_stage is not None and k != only_stage) or ctx.run.stage_complete(k):
            continue
        if k > 1 and not ctx.run.stage_complete(k - 1):
            raise StageError(f"stage {k} needs stage {k - 1} COMPLETE ({ctx.stage_dir(k - 1)}): run "
                             f"`launch/train.py --config <cfg> --stage {k - 1}` first")
        seed_everything(cfg.train.seed + k)
        train_stage(ctx, accelerator, k, teacher, probe.from_env(k, accelerator.process_index))
    results = None
    if only_stage is None or only_stage == len(ctx.stages):
        results = evaluate_run(ctx, accelerator)
        if accelerator.is_main_process:
            print(results_table(results))
    accelerator.end_training()
    return results


def _context(cfg: Config, accelerator, only_stage: int | None, restart_from: int | None = None) -> RunContext:
    """The run directory with its config, and the context; a config that changes a finished
    artefact's keys, a stage outside the plan, a named checkpoint of another run, or a stage
    before its teacher fail here, before any work."""
    run_dir = RunDir(cfg.run_dir)
    lineage.check(cfg, run_dir, restart_from)  # every rank: all stop on the same line
    changed = lineage.evaluation_changes(cfg, run_dir)
    accelerator.wait_for_everyone()  # every rank has read the old config before it is replaced
    if accelerator.is_main_process:
        if restart_from is not None:
            gone = lineage.restart(run_dir, restart_from)
            print(f"--restart-from {restart_from}: deleted {', '.join(p.name for p in gone) or 'nothing'}")
        if changed:
            print("evaluation settings changed since the last run ("
                  + "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
                  + "): the trained stages are evaluated again, nothing is retrained")
        run_dir.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir.config)
    accelerator.wait_for_everyone()
    ctx = RunContext.load(cfg)
    if only_stage is not None and not 0 <= only_stage <= len(ctx.stages):
        raise StageError(f"--stage {only_stage}: the plan has stages 0..{len(ctx.stages)} (see `neumeta-dist plan`)")
    Checkpointer.check_resume_target(cfg, len(ctx.stages))
    if only_stage not in (None, 0) and not run_dir.reference.is_file():
        raise StageError(f"stage 0 (teacher) of {run_dir.root} is not complete: run it first with --stage 0")
    return ctx


def main(argv: list[str] | None = None) -> None:
    p = opt.Parser(description="Train a metamorphic network: the whole plan, or one stage.")
    p.add_argument("--config", required=True, help="experiment YAML, e.g. configs/demo.yaml")
    p.add_argument("--stage", type=opt.count(0), default=None,
                   help="run only this stage (0 = teacher + smoothing); default: every remaining stage")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved, validated config (as `neumeta-dist config`) before starting")
    p.add_argument("--restart-from", type=opt.count(0), default=None, metavar="K",
                   help="delete stage K's artefacts and every later stage's (0 = the teacher too) and train them "
                        "again: the way on when a changed config makes a finished stage stale")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-3")
    args = p.parse_intermixed_args(argv)  # `--stage k` may follow the overrides
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config and os.environ.get("RANK", "0") == "0":  # once, not once per process
            print(config_text(cfg), end="", flush=True)
        run(cfg, args.stage, args.restart_from)
    except (StageError, ckpt.CheckpointError, ConfigError, DataError, parallel.ParallelError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
