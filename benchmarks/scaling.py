"""Step time and per-rank memory of the real training step: 1 vs N processes, DDP vs ZeRO-3.

    .venv/bin/python benchmarks/scaling.py --out runs/bench/scaling [--procs 1,2] [--modes ddp,zero3]
        [--generation replicated] [--family resnet20 --width 1.0 --hidden 256 --layers 3]

The driver launches, for every (mode, processes, generation), `accelerate launch --config_file
configs/accelerate/<mode>.yaml --num_processes N benchmarks/scaling.py --worker ...`: each
rank builds the INR over a random teacher of the family, prepares it with AdamW exactly as a
stage does, and times `train.train_step` (the loop's step: `widths_per_step` micro-batches of
`batch_size` random images per rank, one full width, the rest sampled) after warm-up steps.
Per rank it records:

- `params_mib`: the INR parameters this rank stores (its partition under ZeRO-3);
- `optimizer_mib`: what the optimiser holds on this rank: the tensors it updates (under
  ZeRO the fp32 flat partition) and their Adam moments;
- `peak_mib`: peak CUDA memory allocated (GPU) or peak resident set size (CPU, process-wide:
  it includes the Python/PyTorch/DeepSpeed runtime, ~0.5 GiB).

Writes `<out>/scaling.json` (one row per run) and prints a markdown table. Works on CUDA
(bf16, NCCL) and on CPU (fp32, gloo; DeepSpeed's CPU accelerator). `--generation` selects how
the weights are generated; each choice maps to config overrides in `GENERATION` (a new
strategy adds one entry there).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# How weights are generated → the config overrides that select it.
GENERATION: dict[str, list[str]] = {"replicated": [], "coordinate_parallel": ["train.generation=coordinate_parallel"]}


def worker(args) -> None:
    import torch
    from neumeta_dist.distributed import data_parallel as parallel
    from neumeta_dist.config import load_config
    from neumeta_dist.training.execution import Execution
    from neumeta_dist.distributed.coordinate_parallel import generation_strategy
    from neumeta_dist.models.registry import build_family
    from neumeta_dist.models.family import Teacher
    from neumeta_dist.distributed.accelerator import make_accelerator
    from neumeta_dist.training.process import seed_everything, set_threads
    from neumeta_dist.training.loop import _param_groups, train_step
    from neumeta_dist.training.trained import build_net

    set_threads()
    cfg = load_config(None, [f"model.family={args.family}", f"model.width={args.width}", f"inr.hidden={args.hidden}",
                             f"inr.layers={args.layers}", f"data.batch_size={args.batch_size}",
                             f"train.widths_per_step={args.widths_per_step}", "train.clip_mode=norm",
                             "meta.generated=all", *GENERATION[args.generation]])
    accelerator = make_accelerator()
    seed_everything(0)
    family = build_family(cfg.model.family, cfg.model.width, in_channels=3, num_classes=10)
    model = build_net(cfg, family, Teacher(family).eval().folded())
    precision = "bf16" if accelerator.mixed_precision == "bf16" else "fp32"  # the launcher's, here
    parallel.configure(accelerator, cfg.train.widths_per_step, cfg.train.grad_clip, cfg.train.clip_mode,
                       cfg.data.batch_size, precision)
    parallel.freeze_unused(model, list(model.alphas().values()))
    opt = torch.optim.AdamW(_param_groups(cfg, model))
    total_params = sum(p.numel() for p in model.parameters())
    images = torch.randn(4 * args.batch_size, 3, 32, 32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.randint(0, 10, (len(images),))),
                                         batch_size=args.batch_size, shuffle=True, drop_last=True)
    net, opt, loader = accelerator.prepare(model, opt, loader)
    parallel.register_external_parameters(accelerator, accelerator.unwrap_model(net))
    accelerator.unwrap_model(net).generation = generation_strategy(cfg.train.generation)
    data = _endless(loader)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for step in range(args.warmup + args.steps):
        accelerator.wait_for_everyone()
        sync()
        t = time.perf_counter()
        train_step(cfg, accelerator, net, opt, data, step, Execution.from_config(cfg.train))
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
    row = {"mode": args.mode,
           "processes": accelerator.num_processes, "generation": args.generation,
           "step_s": statistics.median(times), "rank": accelerator.process_index,
           "images_per_s": args.widths_per_step * args.batch_size * accelerator.num_processes / statistics.median(times),
           "params_mib": parallel.local_numel(accelerator.unwrap_model(net)) * 4 / 2**20,
           "optimizer_mib": _optimizer_bytes(opt) / 2**20, "peak_mib": _peak_bytes() / 2**20,
           "params": total_params}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.tag}_rank{accelerator.process_index}.json").write_text(json.dumps(row))
    accelerator.end_training()


def _endless(loader):
    while True:
        yield from loader


def _optimizer_bytes(opt) -> int:
    """Tensors the innermost torch optimiser updates and keeps (DeepSpeed wraps it twice)."""
    import torch
    inner = opt
    while hasattr(inner, "optimizer"):
        inner = inner.optimizer
    tensors = {id(p): p for g in inner.param_groups for p in g["params"]}
    for state in inner.state.values():
        tensors.update({id(v): v for v in state.values() if torch.is_tensor(v)})
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _peak_bytes() -> int:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def drive(args) -> None:
    import torch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    rows = []
    for generation in args.generation.split(","):
        for mode in args.modes.split(","):
            for n in map(int, args.procs.split(",")):
                tag = f"{mode}_{n}_{generation}"
                cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
                       str(ROOT / "configs/accelerate" / f"{mode}.yaml"), "--num_processes", str(n),
                       "--mixed_precision", "bf16" if cuda else "no", __file__, "--worker", "--mode", mode,
                       "--tag", tag, "--generation", generation, *_forward(args)]
                env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
                env = {k: v for k, v in env.items() if v != ""}
                done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{tag} failed:\n{done.stderr[-4000:]}")
                ranks = [json.loads((out / f"{tag}_rank{r}.json").read_text()) for r in range(n)]
                rows.append({**{k: ranks[0][k] for k in ("mode", "processes", "generation", "step_s", "images_per_s")},
                             "ranks": [{k: r[k] for k in ("rank", "params_mib", "optimizer_mib", "peak_mib")}
                                       for r in ranks], "params": ranks[0]["params"]})
                print(_row(rows[-1]), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": _machine(cuda), "command": " ".join(sys.argv),
            "settings": vars(args)}
    (out / "scaling.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    print(f"\n{meta['machine']}\n\n" + table(rows) + f"\nwrote {out / 'scaling.json'}")


def _forward(args) -> list[str]:
    keys = ("family", "width", "hidden", "layers", "batch_size", "widths_per_step", "warmup", "steps", "out")
    return [x for k in keys for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def _machine(cuda: bool) -> str:
    import torch
    if cuda:
        return f"{torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (CPU)"


def _row(r: dict) -> str:
    mem = " / ".join(f"{x['params_mib']:.1f}+{x['optimizer_mib']:.1f} ({x['peak_mib']:.0f})" for x in r["ranks"])
    return (f"| {r['mode']} | {r['processes']} | {r['generation']} | {r['step_s'] * 1e3:.0f} | "
            f"{r['images_per_s']:.0f} | {mem} |")


def table(rows: list[dict]) -> str:
    head = ("| mode | processes | generation | step (ms) | images/s | per rank: params + optimiser MiB (peak MiB) |\n"
            "|---|---|---|---|---|---|\n")
    return head + "\n".join(_row(r) for r in rows) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for scaling.json")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--modes", default="ddp,zero3", help="configs/accelerate/<mode>.yaml, comma-separated")
    p.add_argument("--generation", default="replicated", help=f"comma-separated: {', '.join(GENERATION)}")
    p.add_argument("--family", default="resnet20")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--widths-per-step", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="", help=argparse.SUPPRESS)
    p.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    unknown = set(args.generation.split(",")) - set(GENERATION)
    if unknown:
        raise SystemExit(f"--generation {','.join(sorted(unknown))}: allowed {', '.join(GENERATION)}")
    worker(args) if args.worker else drive(args)


if __name__ == "__main__":
    main()
