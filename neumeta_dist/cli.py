"""`neumeta-dist train|eval|export …` — the user-facing commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import checkpoint as ckpt
from . import options as opt


def cmd_eval(args) -> None:
    from .distributed.accelerator import make_accelerator
    from .evaluation.results import results_table

    overrides = list(args.overrides)
    if args.widths:
        overrides.append(f"eval.widths={args.widths}")
    if args.samples:
        overrides.append(f"eval.samples={args.samples}")
    run = _open(args, overrides)
    acc = make_accelerator()
    results = run.evaluate(acc)
    if acc.is_main_process:
        print(results_table(results))
        print(f"wrote this evaluation to {run.dir.root / 'evaluations'}/ and regenerated {run.dir.results_json} "
              "(every evaluation of the run, merged)")


def cmd_export(args) -> None:
    if (args.width is None) == (not (args.max_params or args.max_macs)):
        raise SystemExit("error: export needs --width or a budget (--max-params N and/or --max-macs N), not both")
    run = _open(args, list(args.overrides))
    try:
        width = run.width_for(args.width, args.max_params, args.max_macs)
    except ValueError as e:
        raise SystemExit(f"error: --{e}" if str(e).startswith("width") else f"error: {e}") from None
    how = run.export(Path(args.out), width, format=args.format)
    print(run.describe(width))
    print(f"exported ({args.format}) to {args.out}; load with {how}")


def _open(args, overrides: list[str]):
    """The run of --run (with --ckpt's stage result instead of its last stage, if given)."""
    from .api import Run
    try:
        return Run(Path(args.run), overrides, _result(args))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def _result(args) -> dict | None:
    """The stage result named by --ckpt (final.pt or a consolidated checkpoint), if any."""
    from .distributed.consolidate import load_result
    return load_result(Path(args.ckpt)) if args.ckpt else None


def cmd_consolidate(args) -> None:
    from .distributed.consolidate import consolidate

    result = consolidate(Path(args.ckpt))
    ckpt.atomic_torch_save(result, Path(args.out))
    n = sum(v.numel() for v in result["model"].values())
    print(f"consolidated {args.ckpt} (stage {result['stage']}, step {result['steps']}, "
          f"{result['source']['mode']} × {result['source']['world_size']}): {n:,} parameters + EMA to {args.out}")


def cmd_plan(args) -> None:
    from .config import load_config
    from .core.sizing import budget_lines
    from .recipe.stages import describe, steps_per_stage
    from .training.context import RunContext

    ctx = RunContext.load(load_config(args.config, args.overrides))
    n_train = len(ctx.splits.train)
    print(describe(ctx.family, ctx.stages, steps_per_stage(ctx.cfg, n_train)))
    print("\nbudget on one process (core/sizing.py):")
    for line in budget_lines(ctx.cfg, ctx.family, n_train, ctx.splits.image_size):
        print(f"- {line}")


def cmd_config(args) -> None:
    from .config import config_text, load_config

    cfg = load_config(args.config, args.overrides)
    print(f"# {args.config}{' ' + ' '.join(args.overrides) if args.overrides else ''}: resolved and validated")
    print(config_text(cfg), end="")
    if args.fetch_teacher:
        from .models import is_remote, zoo

        spec = cfg.teacher.checkpoint
        if not is_remote(spec):
            raise SystemExit(f"error: --fetch-teacher: teacher.checkpoint={spec!r} is not a URL or torchvision:<Weights>")
        try:
            path = zoo.locate(spec)
        except ValueError as e:
            raise SystemExit(f"error: teacher.checkpoint {spec}: {e}") from None
        print(f"# teacher.checkpoint {spec}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def cmd_individual(args) -> None:
    from .baselines.individual import train_individual
    from .config import load_config

    cfg = load_config(args.config, args.overrides)
    widths = args.widths or cfg.eval.widths
    for r in train_individual(cfg, widths):
        print(f"width {r['width']:.3f}: {r['params']:,} params, accuracy {r['accuracy']:.4f}")


def cmd_slimmable(args) -> None:
    from .baselines.slimmable import run
    from .config import load_config
    from .evaluation.results import results_table

    results = run(load_config(args.config, args.overrides), args.steps or None)
    print(results_table(results))


def cmd_report(args) -> None:
    from .checkpoint import atomic_write_text
    from .evaluation.report import write_report

    if (args.protocol is None) == (not args.runs):
        raise SystemExit("error: report: give either --runs DIR [DIR ...] or --protocol DIR (docs/protocol/results)")
    if args.protocol is not None:
        from .evaluation.protocol import write
        text = write(args.protocol, Path(args.out), args.split)
        if args.preamble:
            text = Path(args.preamble).read_text().rstrip("\n") + "\n\n" + text
        atomic_write_text(Path(args.out), text)
        print(text)
        return
    commands = dict(args.command)
    text = write_report([Path(r) for r in args.runs], Path(args.individual) if args.individual else None,
                        Path(args.out), commands, args.x, dict(args.seeds))
    if args.preamble:  # the hand-written reading of the figures, kept beside the generated table
        text = Path(args.preamble).read_text().rstrip("\n") + "\n\n" + text
    atomic_write_text(Path(args.out), text)
    print(text)


def cmd_shards(args) -> None:
    import os
    import time

    from .data.shards import write_dataset

    workers = args.workers or min(8, os.cpu_count() or 1)
    t0 = time.perf_counter()
    index = write_dataset(args.source, args.path, args.out, args.maxcount, args.maxsize, args.holdout, args.seed,
                          args.name, verify=not args.no_verify, workers=workers)
    seconds = time.perf_counter() - t0
    for split, s in index["splits"].items():
        print(f"{split}: {s['count']:,} samples in {len(s['shards'])} shards")
    total = sum(s["count"] for s in index["splits"].values())
    print(f"{total:,} images in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} images/s, {workers} workers)")
    print(f"wrote {Path(args.out) / 'index.json'} ({len(index['classes'])} classes"
          f"{', verified' if not args.no_verify else ''}); train with data.dataset=shards data.root={args.out}")


def cmd_train(args) -> None:
    from .training.pipeline import main as train_main
    train_main(["--config", args.config, *(["--stage", str(args.stage)] if args.stage is not None else []),
                *(["--print-config"] if args.print_config else []),
                *(["--restart-from", str(args.restart_from)] if args.restart_from is not None else []),
                *args.overrides])


def _pair(text: str, expected: str) -> tuple[str, str]:
    """`key=value` of a repeatable option, both non-empty (the key stripped)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
    return key.strip(), value


def _recipe_command(text: str) -> tuple[str, str]:
    return _pair(text, "recipe=command, e.g. full='launch/evidence.sh runs 300'")


def _seed_group(text: str) -> tuple[str, list[Path]]:
    label, dirs = _pair(text, "LABEL=DIR,DIR,… (run directories of one method)")
    return label, [opt.existing_dir(d) for d in dirs.split(",")]


def main(argv: list[str] | None = None) -> None:
    p = opt.Parser(prog="neumeta-dist", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="run the pipeline (same as launch/train.py)")
    t.add_argument("--config", required=True)
    t.add_argument("--stage", type=opt.count(0), default=None, help="run only this stage (0 = teacher)")
    t.add_argument("--print-config", action="store_true", help="print the resolved config before starting")
    t.add_argument("--restart-from", type=opt.count(0), default=None, metavar="K",
                   help="delete stage K's artefacts and every later stage's, and train them again")
    t.add_argument("overrides", nargs="*")
    t.set_defaults(fn=cmd_train)

    pl = sub.add_parser("plan", help="print the stage plan: what each stage generates and its budget")
    pl.add_argument("--config", required=True)
    pl.add_argument("overrides", nargs="*")
    pl.set_defaults(fn=cmd_plan)

    cf = sub.add_parser("config", help="print the resolved, validated config (base chain + overrides): what will run")
    cf.add_argument("config", type=opt.existing_file, help="experiment YAML, e.g. configs/demo.yaml")
    cf.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-3")
    cf.add_argument("--fetch-teacher", action="store_true",
                    help="also download a URL or torchvision:<Weights> teacher.checkpoint into torch's hub cache "
                         "(on a node with internet, before the compute nodes that may have none)")
    cf.set_defaults(fn=cmd_config)

    i = sub.add_parser("individual", help="train one network per width on its own (the baseline)")
    i.add_argument("--config", required=True)
    i.add_argument("--widths", type=opt.widths, default=None,
                   help="comma-separated fractions in (0, 1]; default: eval.widths")
    i.add_argument("overrides", nargs="*")
    i.set_defaults(fn=cmd_individual)

    sl = sub.add_parser("slimmable", help="train the universally slimmable baseline (US-Nets) and sweep widths")
    sl.add_argument("--config", required=True)
    sl.add_argument("--steps", type=opt.count(0), default=0,
                    help="optimiser steps; default: the image passes of the config's metamorphic pipeline")
    sl.add_argument("overrides", nargs="*")
    sl.set_defaults(fn=cmd_slimmable)

    r = sub.add_parser("report", help="one table + plot from several runs (docs/results.md)")
    r.add_argument("--runs", nargs="+", type=opt.existing_dir, default=[], help="run directories with results.json")
    r.add_argument("--protocol", type=opt.existing_dir, default=None,
                   help="the evidence protocol's JSONs (docs/protocol/results): rows over seeds, paired intervals, "
                        "endpoints (docs/protocol.md)")
    r.add_argument("--split", default="final", choices=["val", "final", "test"],
                   help="with --protocol: the split tabled (default: final, the protocol's reported figure)")
    r.add_argument("--individual", type=opt.existing_file, default=None,
                   help="individual.json of `neumeta-dist individual`")
    r.add_argument("--out", type=opt.output_file, required=True,
                   help="markdown table to write, e.g. docs/results/table.md")
    r.add_argument("--command", action="append", default=[], type=_recipe_command,
                   help="recipe=command that reproduces it (default: the command its results.json records)")
    r.add_argument("--preamble", type=opt.existing_file, default=None,
                   help="markdown put before the table (the set-up and its reading)")
    r.add_argument("--x", default="compression", choices=["compression", "macs"], help="the plot's x axis")
    r.add_argument("--seeds", action="append", default=[], type=_seed_group,
                   help="LABEL=DIR,DIR,…: one method's runs over several seeds, tabled as mean ± spread")
    r.set_defaults(fn=cmd_report)

    e = sub.add_parser("eval", help="sweep widths of a trained run; writes results.{json,md} and the plot")
    e.add_argument("--run", type=opt.existing_dir, required=True, help="run directory, e.g. runs/demo")
    e.add_argument("--widths", type=opt.widths, default=None,
                   help="comma-separated fractions in (0, 1], e.g. 0.25,0.5,1.0")
    e.add_argument("--samples", type=opt.count(0), default=0,
                   help="noisy samples averaged per network (0: eval.samples)")
    e.add_argument("--ckpt", type=opt.existing_file, default=None,
                   help="evaluate this stage result (consolidated file) instead of the last stage")
    e.add_argument("overrides", nargs="*")
    e.set_defaults(fn=cmd_eval)

    x = sub.add_parser("export", help="write a plain network at one width, or the widest within a budget")
    x.add_argument("--run", type=opt.existing_dir, required=True, help="run directory, e.g. runs/demo")
    x.add_argument("--width", type=opt.width, default=None,
                   help="fraction of the full width in (0, 1], e.g. 0.5 (1 = the teacher's size: no wider "
                        "network is generated)")
    x.add_argument("--max-params", type=opt.budget, default=0,
                   help="instead of --width: the widest width with at most N parameters (250000 or 2.5e5)")
    x.add_argument("--max-macs", type=opt.budget, default=0,
                   help="... and/or at most N multiply-accumulates per image")
    x.add_argument("--format", default="pt", choices=["pt", "torchscript", "pt2", "onnx"],  # export.FORMATS
                   help="pt: loaded with this package (load_exported); torchscript, pt2 (torch.export), onnx: "
                        "standalone, loaded by torch or onnxruntime alone")
    x.add_argument("--out", type=opt.output_file, required=True, help="file to write, e.g. net_w050.pt")
    x.add_argument("--ckpt", type=opt.existing_file, default=None,
                   help="export from this stage result (consolidated file) instead of the last stage")
    x.add_argument("overrides", nargs="*")
    x.set_defaults(fn=cmd_export)

    c = sub.add_parser("consolidate", help="one plain file (INR + EMA) from a checkpoint, DeepSpeed shards included")
    c.add_argument("--ckpt", type=opt.existing_dir, required=True, help="a stage_<k>/checkpoint_<step> directory")
    c.add_argument("--out", type=opt.output_file, required=True,
                   help="file to write; eval/export read it with --ckpt")
    c.set_defaults(fn=cmd_consolidate)

    sh = sub.add_parser("shards", help="write WebDataset shards + index.json from ImageNet/Fashion-MNIST/CIFAR")
    sh.add_argument("--source", required=True, choices=["imagefolder", "imagenet", "fashion-mnist", "cifar10", "cifar100"])
    sh.add_argument("path", type=opt.existing_dir,
                    help="imagefolder: root with train/<class>/*.JPEG (+ val/<class>/*); imagenet: the folder of "
                         "the downloaded ILSVRC2012_img_train.tar (+ ILSVRC2012_img_val.tar and "
                         "ILSVRC2012_devkit_t12.tar.gz), read in place; "
                         "fashion-mnist: the IDX folder; cifar*: the python-pickle folder")
    sh.add_argument("--out", type=opt.output_dir, required=True,
                    help="output folder for <split>-NNNNNN.tar and index.json")
    sh.add_argument("--maxcount", type=opt.count(1), default=1000, help="samples per shard at most")
    sh.add_argument("--maxsize", type=opt.count(1), default=3 << 30, help="bytes per shard at most")
    sh.add_argument("--holdout", type=opt.holdout_fraction, default=0.01,
                    help="fraction of train held out (by key hash) as the `holdout` split for model selection")
    sh.add_argument("--seed", type=int, default=0, help="seed of the sample order inside the shards")
    sh.add_argument("--name", default="", help="dataset name recorded in the index (default: folder/source)")
    sh.add_argument("--workers", type=opt.count(0), default=0,
                    help="processes that read and check the images (0: one per core, at most 8); the shards "
                         "are the same for any number")
    sh.add_argument("--no-verify", action="store_true",
                    help="copy images without decoding them first, and skip reading every shard back after writing")
    sh.set_defaults(fn=cmd_shards)

    args = p.parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, RuntimeError, OSError) as e:  # ours are ValueError/RuntimeError; OSError: the file system's
        raise SystemExit(f"error: {e}") from None



def entry() -> None:
    """The `neumeta-dist` command (pyproject), run under `accelerate launch` too: leaves like
    launch/train.py, without interpreter teardown."""
    from .training.process import exit_skipping_teardown
    exit_skipping_teardown(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    entry()
