"""Seconds per optimiser step of a config's INR stage on this device, and the wall time per
stage they imply: the figure the GPU configs' headers are to state.

    python benchmarks/config_step.py --device cuda --out runs/bench --config configs/imagenet_resnet18.yaml
    python benchmarks/config_step.py --device cpu --out runs/bench --config configs/demo.yaml --steps 2

Runs the training loop's own step (`training/loop.py: train_step`: the config's micro-batches
and widths, sandwich, losses, clipping, precision, channels-last, fused AdamW on CUDA) on the
config's network with every planned block generated (one stage's step), a random teacher
(a step's cost does not depend on its values) and synthetic batches of the config's shape,
so it needs no dataset: a GPU machine without ImageNet measures the ImageNet configs. Not
counted: data loading (docs/benchmarks.md "Data pipeline" sizes the workers for it), the
heads' reconstruction warm-up, selection and evaluation. The stage's hours are the median
step × `steps_per_stage` for the training images the config's header assumes (`--train-images`
overrides). Writes `<out>/config_step_<device>.json`, rewritten after each config.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/<x>.py`: import as `python -m benchmarks.<x>` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import machine, open_device, timed, write_json

IMAGENET_TRAIN = 1_281_167 - 12_812  # ImageNet-1k less the 1 % holdout `neumeta-dist shards --holdout 0.01` cuts
# dataset → (channels, side, classes, training images before the validation/final cuts)
SHAPES = {"shards": (3, 224, 1000, IMAGENET_TRAIN), "cifar100": (3, 32, 100, 50_000), "cifar10": (3, 32, 10, 50_000),
          "fashion-mnist": (1, 28, 10, 60_000), "synthetic": (1, 16, 10, 2048)}


def shape(cfg) -> tuple[int, int, int, int]:
    """Channels, side, classes and training images of the config's data (held-out cuts removed)."""
    channels, side, classes, n = SHAPES[cfg.data.dataset]
    if cfg.data.dataset == "shards":  # the holdout is cut when the shards are written
        return channels, cfg.data.image_size or side, classes, n
    n = cfg.data.train_limit or n
    return channels, side, classes, n - round(cfg.data.val_fraction * n) - round(cfg.data.final_fraction * n)


def measure(cfg, device: torch.device, steps: int, warmup: int, n_train: int) -> dict:
    from neumeta_dist.distributed import data_parallel as parallel
    from neumeta_dist.distributed.accelerator import make_accelerator
    from neumeta_dist.models.family import Teacher
    from neumeta_dist.models.norms import norm_strategy
    from neumeta_dist.models.registry import build_family
    from neumeta_dist.recipe.stages import generated_layers, step_images, steps_per_stage
    from neumeta_dist.training.loop import prepare_step, train_step
    from neumeta_dist.training.trained import build_net

    channels, side, classes, _ = shape(cfg)
    m = cfg.model
    family = build_family(m.family, m.width, tuple(m.channels) or None, channels, classes,
                          norm_strategy(cfg.meta.norm).family_norm)
    torch.manual_seed(0)
    teacher = Teacher(family).eval()
    accelerator = make_accelerator()
    tc = cfg.train
    parallel.configure(accelerator, tc.widths_per_step, tc.grad_clip, tc.clip_mode, cfg.data.batch_size, tc.precision)
    model = build_net(cfg, family, teacher.folded()).to(accelerator.device)
    model.activate(generated_layers(family, cfg.meta.generated))
    kd_teacher = teacher.to(accelerator.device).requires_grad_(False) if cfg.loss.kd > 0 else None
    net, opt, ex, kd_teacher = prepare_step(cfg, accelerator, model, kd_teacher)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(cfg.data.batch_size, channels, side, side, generator=g).to(accelerator.device),
                torch.randint(0, classes, (cfg.data.batch_size,), generator=g).to(accelerator.device))
               for _ in range(tc.widths_per_step)]
    counter = iter(range(10 ** 9))

    def step() -> None:
        k = next(counter)
        train_step(cfg, accelerator, net, opt, iter(batches), k, ex, kd_teacher)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    r = timed(step, device, steps, warmup)
    total = steps_per_stage(cfg, n_train)
    images = step_images(cfg)
    out = {"median_step_s": r["median_s"], "min_step_s": r["min_s"], "first_step_s": r["first_call_s"],
           "images_per_s": images / r["median_s"], "images_per_step": images, "train_images": n_train,
           "steps_per_stage": total, "stage_hours": total * r["median_s"] / 3600,
           "inr_parameters": sum(p.numel() for p in model.inr.parameters())}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for config_step_<device>.json")
    p.add_argument("--config", nargs="+", required=True, help="experiment YAMLs, e.g. configs/imagenet_resnet18.yaml")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotuning, caches)")
    p.add_argument("--train-images", type=int, default=0, help="training images (0: the dataset's, see SHAPES)")
    p.add_argument("--set", nargs="*", default=[], help="dotted overrides for every config, e.g. data.batch_size=64")
    args = p.parse_args(argv)
    device = open_device(args.device, 0)
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # the CPU even where a GPU is visible
    from neumeta_dist.config import load_config

    payload = {"benchmark": "config_step", **machine(device), "overrides": args.set,
               "command": "PYTHONPATH=. python benchmarks/config_step.py " + " ".join(argv or sys.argv[1:]),
               "configs": {}}
    for path in args.config:
        cfg = load_config(path, args.set, files=False)
        n_train = args.train_images or shape(cfg)[3]
        r = payload["configs"][path] = measure(cfg, device, args.steps, args.warmup, n_train)
        print(f"{path}: {r['median_step_s']:.3f} s/step, {r['images_per_s']:.0f} images/s → "
              f"{r['steps_per_stage']:,} steps = {r['stage_hours']:.2f} h per stage", flush=True)
        out = write_json(args.out, f"config_step_{device.type}.json", payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
