"""Wall time, images/s and peak memory of a config's first stage: stage 0 (teacher and
smoothing), then stage 1 (the first INR stage), each run as `launch/train.py --stage k` runs it.

    python benchmarks/stage.py --device cuda --out runs/bench --config configs/fashion_mnist_resnet20_w050.yaml \\
        model.width=1.0 train.precision=bf16 train.channels_last=true data.root=data/fashion-mnist

Both stages run in this process (`pipeline.run(cfg, only_stage=k)`, one Accelerator), in
`--run-dir` (default `<out>/stage_run/`), emptied first. Per stage: wall seconds (set-up, data, every step and the
hand-off; stage 1 includes its reconstruction warm-up), images/s (the median of the
`images_per_s` the loop logs to TensorBoard every `train.log_every` steps, the first value,
which carries the warm-up, left out when there are more), peak memory (CUDA:
`max_memory_allocated` over the stage; CPU: the process's peak RSS so far) and the stage's
accuracy. Writes `<out>/stage_<device>.json`, rewritten after each stage.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/<x>.py`: import as `python -m benchmarks.<x>` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import machine, open_device, sync, write_json

# What each stage logs its throughput as (logger.Logger.step), under <run>/tb/<name>/.
THROUGHPUT = {0: ("teacher", "teacher/images_per_s"), 1: ("stage_1", "images_per_s")}


def logged_rate(tb_dir: Path, tag: str) -> dict:
    """The median logged images/s (the first value left out when there are more) and how many."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    values = [e.value for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
    steady = values[1:] or values
    return {"images_per_s": statistics.median(steady) if steady else None, "logged": len(values)}


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def run_stage(cfg, k: int, device: torch.device) -> dict:
    from neumeta_dist.checkpoint import complete_info, load_torch
    from neumeta_dist.training.pipeline import run
    from neumeta_dist.run import RunDir

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    run(cfg, only_stage=k)
    sync(device)
    out = {"wall_s": time.perf_counter() - t0, "peak_memory_gib": peak_memory_gib(device)}
    name, tag = THROUGHPUT[k]
    run_dir = RunDir(cfg.run_dir)
    out.update(logged_rate(run_dir.tb(name), tag))
    if k == 0:
        out["teacher_test_accuracy"] = load_torch(run_dir.teacher, "teacher")["accuracy"]
    else:
        info = complete_info(run_dir.stage(k))
        out.update(steps=info.get("steps"), val_accuracy=info.get("val"))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for stage_<device>.json and the run (stage_run/)")
    p.add_argument("--config", required=True, help="experiment YAML, e.g. configs/fashion_mnist_resnet20_w050.yaml")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--run-dir", default=None, help="the stages' run directory (default: <out>/stage_run)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.width=1.0")
    args = p.parse_args(argv)
    device = open_device(args.device, 0)
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # the CPU even where a GPU is visible
    os.environ.setdefault("NEUMETA_NO_BAR", "1")
    from neumeta_dist.config import load_config

    run_dir = Path(args.run_dir or Path(args.out) / "stage_run")
    shutil.rmtree(run_dir, ignore_errors=True)  # a timing starts from nothing: no resume, no teacher reuse
    cfg = load_config(args.config, [*args.overrides, f"run_dir={run_dir}"])
    payload = {"benchmark": "stage", **machine(device), "config": args.config, "overrides": args.overrides,
               "command": "PYTHONPATH=. python benchmarks/stage.py " + " ".join(argv or sys.argv[1:]),
               "model": {"family": cfg.model.family, "width": cfg.model.width}, "batch_size": cfg.data.batch_size,
               "widths_per_step": cfg.train.widths_per_step, "stages": {}}
    print(f"stage benchmark on {payload['device_name']}: {args.config} {' '.join(args.overrides)}", flush=True)
    for k in (0, 1):
        r = payload["stages"][str(k)] = run_stage(cfg, k, device)
        rate = f"{r['images_per_s']:.0f}" if r["images_per_s"] else "-"
        print(f"  stage {k}: {r['wall_s']:.1f} s, {rate} images/s, peak {r['peak_memory_gib']:.2f} GiB", flush=True)
        path = write_json(args.out, f"stage_{device.type}.json", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
