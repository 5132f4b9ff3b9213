"""Forward+backward time of generating every tensor of a network at full width (one INR call).

    .venv/bin/python benchmarks/generation_cpu.py [--family resnet20 --width 1.0 --hidden 256 --layers 4]

Prints rows, tensors and the median of `--repeats` timed runs after one warm-up. The
comparison against the reference's per-layer masked loop is issue 7's `benchmarks/generation.py`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from neumeta_dist.config import INRConfig
from neumeta_dist.metamorphic import MetamorphicNet
from neumeta_dist.models.resnet import Teacher, build_family


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--family", default="resnet20")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--num-freqs", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    family = build_family(args.family, args.width, in_channels=3, num_classes=10)
    net = MetamorphicNet(family, Teacher(family).eval().folded(), family.layers,
                         INRConfig(hidden=args.hidden, layers=args.layers, num_freqs=args.num_freqs), norm="fold")
    table, _ = net.table(1.0)
    times = []
    for i in range(args.repeats + 1):
        t = time.perf_counter()
        generated = net.generate(1.0)
        sum(w.square().sum() for w in generated.values()).backward()
        if i:
            times.append(time.perf_counter() - t)
        net.zero_grad(set_to_none=True)
    print(f"{args.family} width {args.width:g}: {len(table):,} rows, {len(generated)} tensors, "
          f"INR hidden {args.hidden}×{args.layers}, threads {torch.get_num_threads()}: "
          f"generation fwd+bwd median {statistics.median(times) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
