"""Forward+backward time of generating every tensor of a network at full width: our one batched
INR call against the reference's per-layer masked loop (benchmarks/reference.py), same INR.

    python benchmarks/generation.py --device cuda --out runs/bench
    python benchmarks/generation.py --device cpu --out runs/bench --hidden 64 --layers 2

Variants, all timed in this one process on the same parameters (the reference MLPs are
loaded from our INR's heads, so both emit the same weights):
- `ours`: `MetamorphicNet.generate` at `--precision` (CUDA default bf16 → grouped GEMM);
- `ours_compiled`: the same with the INR trunk under `torch.compile` (CUDA only by default;
  run last, so that a slow compile costs no other variant its figure; its JSON row records
  the first call's seconds and the graphs compiled in the warm-up and in the timed calls);
- `reference`: the masked per-layer loop in fp32, as the reference runs;
- `reference_bf16`: the same loop under bf16 autocast, to separate the batching gain from
  the precision gain (CUDA only by default).
Each call: coordinate noise → INR → per-tensor weights → Σ‖W‖² → backward → zero grads.
FLOP/s count only the useful GEMM work (the columns each tensor needs, no padding), forward
and backward (no input gradient for the first layer), and are given as a share of the bf16
matmul peak measured first in the same process (`--peak-n`; harness.matmul_peak) and, on
CUDA, of the datasheet's. Writes `<out>/generation_<device>.json`, rewritten after each
family, so a run stopped by a time limit keeps the families it finished.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/<x>.py`: import as `python -m benchmarks.<x>` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import (add_common_args, flop_rates, free, host_syncs, machine, announced_peak, start, timed,
                               write_json)
from benchmarks.reference import ReferenceGenerator, ReferenceINR, ReferenceTable
from neumeta_dist.config import INRConfig
from neumeta_dist.core.metamorphic import MetamorphicNet
from neumeta_dist.models.registry import build_family
from neumeta_dist.models.family import Teacher

CLASSES = {"resnet20": 10, "resnet56": 10, "resnet18": 1000, "resnet50": 1000}  # CIFAR / ImageNet heads


def build(name: str, cfg: INRConfig, device: torch.device) -> MetamorphicNet:
    family = build_family(name, 1.0, in_channels=3, num_classes=CLASSES[name])
    return MetamorphicNet(family, Teacher(family).eval().folded(), family.layers, cfg, norm="fold").to(device).train()


def useful_flops(net: MetamorphicNet) -> float:
    """GEMM FLOPs of one forward+backward of the INR over the full-width table."""
    table, cols = net.table(1.0)
    inr = net.inr
    d_in, hidden, layers = inr.w_in.shape[1], inr.w_in.shape[2], len(inr.w_hid)
    rows = len(table)
    trunk = 2 * rows * (d_in * hidden + layers * hidden * hidden)
    head = sum(2 * (e.end - e.start) * hidden * (inr.out_dim if c is None else len(c))
               for e, c in zip(table.entries, cols))
    return 3 * (trunk + head) - 2 * rows * d_in * hidden  # backward = 2× forward, minus dL/dfeatures


def step_fn(generate, modules, autocast):
    def step():
        with autocast():
            weights = generate()
        sum(w.float().square().sum() for w in weights.values()).backward()
        for m in modules:
            m.zero_grad(set_to_none=True)
    return step


def bench_family(name: str, args, device: torch.device, peak: dict | None) -> dict:
    cfg = INRConfig(hidden=args.hidden, layers=args.layers, num_freqs=args.num_freqs, activation=args.activation)
    net = build(name, cfg, device)
    sizes = net.sizes(1.0)
    t = time.perf_counter()
    table, _ = net.table(1.0)
    ours_table_s = time.perf_counter() - t
    ref = ReferenceGenerator(ReferenceINR.from_inr(net.inr, args.activation), net.generated, net.norm_width, net.kernel)
    t = time.perf_counter()
    ref.tables[tuple(sorted(sizes.items()))] = ReferenceTable(net.generated, sizes, net.norm_width, device)
    ref_table_s = time.perf_counter() - t
    gen = torch.Generator(device=device).manual_seed(0)
    def bf16():
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def fp32():
        return torch.autocast(device.type, enabled=False)
    ours_ac = bf16 if args.precision == "bf16" else fp32
    variants = {
        "ours": (lambda: net.set_execution("auto", False), lambda: net.generate(1.0, generator=gen), [net], ours_ac),
        "ours_compiled": (lambda: net.set_execution("auto", True), lambda: net.generate(1.0, generator=gen), [net], ours_ac),
        "reference": (lambda: None, lambda: ref.generate(sizes, net.coord_noise, gen), [ref.inr], fp32),
        "reference_bf16": (lambda: None, lambda: ref.generate(sizes, net.coord_noise, gen), [ref.inr], bf16),
    }
    flops = useful_flops(net)
    device_name = machine(device)["device_name"]
    out = {"rows": len(table), "tensors": len(table.entries), "table_build_s": {"ours": ours_table_s, "reference": ref_table_s},
           "useful_flops_per_call": flops, "variants": {}}
    for v in args.variants:
        setup, generate, modules, autocast = variants[v]
        setup()
        step = step_fn(generate, modules, autocast)
        try:
            r = timed(step, device, args.repeats, args.warmup)
            r["host_syncs"] = host_syncs(step, device)
        except torch.OutOfMemoryError:
            r = {"error": "out of memory (try a smaller --hidden)"}
        except Exception as e:  # a compile failure must not cost the other variants' figures
            r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        if "median_s" in r:
            with autocast():
                r["kernel"] = net.inr.kernel(device) if v.startswith("ours") else "masked per-layer loop"
            r.update(flop_rates(flops, r["median_s"], peak, device_name, device))
        print(f"  {name} {v}: " + (f"{r['median_s'] * 1e3:.2f} ms, {r['tflop_per_s']:.3g} TFLOP/s"
                                   if "median_s" in r else r["error"]), flush=True)
        out["variants"][v] = r
        net.set_execution("auto", False)
        free(device)
    times = {v: r["median_s"] for v, r in out["variants"].items() if "median_s" in r}
    best = min((times[v] for v in ("ours", "ours_compiled") if v in times), default=None)
    if best:
        out["speedup_vs_reference"] = times["reference"] / best if "reference" in times else None
        out["speedup_vs_reference_bf16"] = times["reference_bf16"] / best if "reference_bf16" in times else None
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for generation_<device>.json")
    p.add_argument("--families", nargs="+", default=["resnet20", "resnet18"], choices=sorted(CLASSES))
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--num-freqs", type=int, default=16)
    p.add_argument("--activation", default="relu")
    p.add_argument("--variants", nargs="+", default=None,
                   choices=["ours", "ours_compiled", "reference", "reference_bf16"])
    p.add_argument("--repeats", type=int, default=10)
    add_common_args(p)
    args, device = start(p, argv)
    gpu = device.type == "cuda"
    args.variants = args.variants or (["ours", "reference", "reference_bf16", "ours_compiled"] if gpu
                                      else ["ours", "reference"])
    torch.manual_seed(0)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    print(f"generation benchmark on {machine(device)['device_name']}: {settings}", flush=True)
    peak = announced_peak(device, args.peak_n)
    results = {}
    for name in args.families:
        results[name] = bench_family(name, args, device, peak)
        path = write_json(args.out, f"generation_{device.type}.json",
                          {"benchmark": "generation", **machine(device), "settings": settings,
                           "command": "PYTHONPATH=. python benchmarks/generation.py " + " ".join(argv or sys.argv[1:]),
                           "measured_bf16_matmul_peak": peak, "families": results})
    for name, r in results.items():
        print(f"{name}: {r['rows']:,} rows; speed-up vs reference {r.get('speedup_vs_reference')}, "
              f"vs reference bf16 {r.get('speedup_vs_reference_bf16')}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
