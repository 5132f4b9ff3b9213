"""Generation step, replicated vs coordinate-parallel, at 1 and N processes.

    .venv/bin/python benchmarks/generation_parallel.py --out runs/bench [--processes 2]
        [--cases resnet20:demo,resnet20:large,resnet18:demo] [--repeats 3] [--threads 1]

The generation step is what every rank does for the INR in one training micro-batch at full
width: generate every tensor of the network (one INR call, `MetamorphicNet.generate`), a loss
on all of them, the backward into the INR (in coordinate-parallel mode this includes the
all-gather of the weights and the reduce-scatter of their gradients), then the all-reduce of
the INR's gradients that DDP adds in both modes (`step_ms` includes it). Every timed step
starts from a barrier; a repeat's time is the slowest rank's; modes alternate within each
repeat so both see the same machine load. The speed-up is replicated / coordinate-parallel at
the same number of processes.

CPU: gloo, `--threads` intra-op threads per process. CUDA (one GPU per process): NCCL. Writes
`generation_parallel.json` to `--out` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neumeta_dist.config import INRConfig
from neumeta_dist.core.metamorphic import MetamorphicNet
from neumeta_dist.models.registry import build_family
from neumeta_dist.models.family import Teacher
from neumeta_dist.distributed.coordinate_parallel import generation_strategy

INRS = {"demo": dict(hidden=64, layers=2, num_freqs=8),  # configs/blockwise.yaml (the demo's until 2026-12-01)
        "large": dict(hidden=256, layers=4, num_freqs=16)}  # benchmarks/generation_cpu.py's default
MODES = ("replicated", "coordinate_parallel")


def build(case: str, device: torch.device) -> MetamorphicNet:
    family_name, inr = case.split(":")
    family = build_family(family_name, 1.0, in_channels=3, num_classes=10)
    torch.manual_seed(0)  # the same INR on every rank
    return MetamorphicNet(family, Teacher(family).eval().folded(), family.layers, INRConfig(**INRS[inr]),
                          norm="fold").to(device).eval()


def timed_step(net: MetamorphicNet, device: torch.device) -> tuple[float, float]:
    """(generation fwd+bwd, + INR gradient all-reduce) seconds on this rank, from a barrier."""
    dist.barrier()
    _sync(device)
    t0 = time.perf_counter()
    generated = net.generate(1.0)
    sum(w.square().sum() for w in generated.values()).backward()
    _sync(device)
    gen = time.perf_counter() - t0
    grads = torch.cat([p.grad.flatten() for p in net.inr.parameters()])
    dist.all_reduce(grads)
    _sync(device)
    net.zero_grad(set_to_none=True)
    return gen, time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(rank: int, world: int, port: int, cases: Sequence[str], repeats: int, threads: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(threads)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    modes = {m: generation_strategy(m) for m in (MODES if world > 1 else MODES[:1])}
    rows = []
    for case in cases:
        net = build(case, device)
        table, _ = net.table(1.0)
        times = {m: [] for m in modes}
        for repeat in range(repeats + 1):  # the first is a warm-up
            for mode, strategy in modes.items():
                net.generation = strategy
                t = torch.tensor(timed_step(net, device), device=device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)  # a step waits for its slowest rank
                if repeat:
                    times[mode].append(t.tolist())
        for mode, ts in times.items():
            gen, step = (statistics.median(x) * 1e3 for x in zip(*ts))
            rows.append(dict(case=case, rows=len(table), tensors=len(table.entries), processes=world,
                             mode=mode, gen_ms=gen, step_ms=step, repeats=repeats))
        del net
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    dist.destroy_process_group()


def measure(processes: int, cases: Sequence[str], repeats: int = 3, threads: int = 1) -> list[dict]:
    """Rows of `cases` ("family:inr") at `processes` spawned ranks: one per generation mode
    (replicated only at 1 process). The entry point for benchmarks/scaling.py."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        mp.spawn(worker, args=(processes, port, list(cases), repeats, threads, str(out)), nprocs=processes)
        return json.loads(out.read_text())


def speedups(rows: list[dict]) -> dict[str, dict[str, float]]:
    """replicated / coordinate-parallel time per case at the largest process count."""
    at = {(r["case"], r["processes"], r["mode"]): r for r in rows}
    world = max(r["processes"] for r in rows)
    return {case: {k: at[case, world, "replicated"][k] / at[case, world, "coordinate_parallel"][k]
                   for k in ("gen_ms", "step_ms")}
            for case in dict.fromkeys(r["case"] for r in rows)}


def table(rows: list[dict]) -> str:
    lines = ["| case | rows | processes | generation | generation fwd+bwd ms | + INR grad all-reduce ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['rows']:,} | {r['processes']} | {r['mode']} | {r['gen_ms']:.1f} | "
                     f"{r['step_ms']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for generation_parallel.json")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--cases", default="resnet20:demo,resnet20:large,resnet18:demo",
                   help="family:inr pairs at width 1.0; inr in " + ", ".join(INRS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process (CPU)")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cases = args.cases.split(",")
    rows = measure(1, cases, args.repeats, args.threads) + measure(args.processes, cases, args.repeats, args.threads)
    result = {"rows": rows, "speedup": speedups(rows), "threads": args.threads,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
              "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "torch": torch.__version__}
    (Path(args.out) / "generation_parallel.json").write_text(json.dumps(result, indent=2))
    print(table(rows))
    for case, s in result["speedup"].items():
        print(f"{case}: coordinate-parallel speed-up at {args.processes} processes: generation "
              f"{s['gen_ms']:.2f}×, step with gradient all-reduce {s['step_ms']:.2f}×")


if __name__ == "__main__":
    main()
