"""Images/s of a full training step — teacher forward, generation, student forward/backward,
optimiser — for our loop and the reference-style loop, on synthetic tensors.

    python benchmarks/train_step.py --device cuda --out runs/bench
    python benchmarks/train_step.py --device cpu --out runs/bench --hidden 64 --layers 2 --batch 16

Cases: `fmnist-resnet20` (1×28×28, 10 classes) and `imagenet-resnet18` (3×224×224, 1000
classes). Both generate every layer; a step is `--micro` micro-batches at widths 1, ¼, ½, ¾
(one of each, the full width first as in training/loop.py), gradients accumulated, then clip by
value, AdamW and the EMA update. The widths repeat every step, so after warm-up both loops
run from their per-width caches (coordinate tables; the reference's per-width modules).
Losses: 100·CE + 1·KD(teacher) + reconstruction at full width + 1e-3·Σ‖W‖ (recipe/losses.py).

- `ours`: `MetamorphicNet.forward` (one INR call, functional student, ordinary autograd)
  with the GPU path of training/execution.py: bf16 autocast, channels-last, fused AdamW, no syncs;
- `ours_compiled`: the same with `train.compile` (INR trunk and student compiled);
- `reference`: benchmarks/reference.py — masked per-layer generation, a module per width,
  weights pushed into `param.data`, a second manual backward; fp32, NCHW, AdamW (foreach).
This file mirrors the micro-batch loop of `train.train_stage` without Accelerate, so that
the GPU image needs nothing beyond torch. FLOP/s: the matmul and convolution FLOPs of one
step (`step_flops`) over its time, as a share of the bf16 matmul peak measured first in the
same process (`--peak-n`) and, on CUDA, of the datasheet's. Writes
`<out>/train_step_<device>.json`, rewritten after each case.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/<x>.py`: import as `python -m benchmarks.<x>` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from benchmarks.harness import (add_common_args, flop_rates, free, host_syncs, machine, announced_peak, start, timed,
                               write_json)
from benchmarks.reference import PlainNet, ReferenceGenerator, ReferenceINR
from neumeta_dist.config import INRConfig, LossConfig
from neumeta_dist.training.ema import EMA
from neumeta_dist.training.execution import Execution
from neumeta_dist.recipe.losses import kd, reconstruction, regulariser, step_losses
from neumeta_dist.core.metamorphic import MetamorphicNet
from neumeta_dist.models.registry import build_family
from neumeta_dist.models.family import Teacher

CASES = {"fmnist-resnet20": dict(family="resnet20", channels=1, side=28, classes=10),
         "imagenet-resnet18": dict(family="resnet18", channels=3, side=224, classes=1000)}
WIDTHS = (1.0, 0.25, 0.5, 0.75)
LOSS = LossConfig(ce=100.0, kd=1.0, recon=1.0, reg=1e-3)
LR, CLIP, EMA_DECAY = 8e-4, 10.0, 0.995


def make_batches(case: dict, batch: int, micro: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, case["channels"], case["side"], case["side"], generator=g).to(device),
             torch.randint(0, case["classes"], (batch,), generator=g).to(device)) for _ in range(micro)]


class OursStep:
    """train.train_stage's step: forward (generation inside), losses, backward per micro-batch."""

    def __init__(self, net: MetamorphicNet, teacher: Teacher, ex: Execution, device):
        self.net, self.teacher, self.ex, self.device = net, teacher, ex, device
        ex.prepare(net, teacher)
        self.params = list(net.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=LR, **ex.optimizer_kwargs(device))
        self.ema = EMA(net, EMA_DECAY)
        self.gen = torch.Generator(device=device).manual_seed(0)

    def __call__(self, batches) -> None:
        self.accumulate(batches)
        torch.nn.utils.clip_grad_value_(self.params, CLIP)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.net)

    def accumulate(self, batches) -> None:
        for fraction, (x, y) in zip(WIDTHS, batches):
            x = self.ex.batch(x)
            with self.ex.autocast(self.device):
                logits, generated = self.net(x, fraction, generator=self.gen)
                with torch.no_grad():
                    t_logits = self.teacher(x)
            terms = step_losses(LOSS, logits.float(), y, generated, self.net.reference, fraction == 1.0,
                                t_logits.float())
            (terms["total"] / len(batches)).backward()


class ReferenceStep:
    """The reference's step: per-width module, `param.data` = generated, manual chain rule."""

    def __init__(self, net: MetamorphicNet, teacher: Teacher, activation: str, device):
        self.net, self.teacher, self.device = net, teacher, device
        self.gen_ref = ReferenceGenerator(ReferenceINR.from_inr(net.inr, activation), net.generated,
                                          net.norm_width, net.kernel)
        self.inr = self.gen_ref.inr
        self.models: dict[float, PlainNet] = {}
        self.opt = torch.optim.AdamW(self.inr.parameters(), lr=LR)
        self.ema = EMA(self.inr, EMA_DECAY)
        self.gen = torch.Generator(device=device).manual_seed(0)

    def __call__(self, batches) -> None:
        self.accumulate(batches)
        torch.nn.utils.clip_grad_value_(self.inr.parameters(), CLIP)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.inr)

    def accumulate(self, batches) -> None:
        m = len(batches)
        for fraction, (x, y) in zip(WIDTHS, batches):
            sizes = self.net.sizes(fraction)
            if fraction not in self.models:
                self.models[fraction] = PlainNet(self.net.family, sizes).to(self.device)
            model = self.models[fraction]
            weights = self.gen_ref.generate(sizes, self.net.coord_noise, self.gen)
            tensors = model.tensors()
            for name, w in weights.items():
                tensors[name].data = w.detach()
            logits = model(x)
            with torch.no_grad():
                t_logits = self.teacher(x)
            task = LOSS.ce * F.cross_entropy(logits, y) + LOSS.kd * kd(logits, t_logits, LOSS.kd_temperature)
            (task / m).backward()
            aux = LOSS.reg * regulariser(weights)
            if fraction == 1.0:
                aux = aux + LOSS.recon * reconstruction(weights, self.net.reference, LOSS.recon_weighting)
            names = list(weights)
            torch.autograd.backward([aux / m] + [weights[n] for n in names],
                                    [torch.ones_like(aux)] + [tensors[n].grad for n in names])
            model.zero_grad(set_to_none=True)


def step_flops(family, base: Teacher, cfg: INRConfig, batches, device) -> float:
    """Matmul and convolution FLOPs of one step's micro-batches, forward and backward (the
    teacher's forward included), counted by torch's FlopCounterMode on our eager per-segment
    INR kernel in fp32 (the grouped GEMM has no FLOP formula there). The same useful work
    for every variant: the reference also computes kernel columns it then drops, uncounted."""
    from torch.utils.flop_counter import FlopCounterMode

    net = MetamorphicNet(family, base.folded(), family.layers, cfg, norm="fold").to(device).train()
    step = OursStep(net, copy.deepcopy(base), Execution(), device)
    net.set_execution("loop", False)
    with FlopCounterMode(display=False) as counter:
        step.accumulate(batches)
    return float(counter.get_total_flops())


def bench_case(name: str, args, device, peak: dict | None) -> dict:
    case = CASES[name]
    family = build_family(case["family"], 1.0, in_channels=case["channels"], num_classes=case["classes"])
    torch.manual_seed(0)
    base = Teacher(family).to(device).eval().requires_grad_(False)
    cfg = INRConfig(hidden=args.hidden, layers=args.layers, num_freqs=args.num_freqs, activation=args.activation)
    batches = make_batches(case, args.batch, len(WIDTHS[:args.micro]), device)
    images = args.batch * len(batches)
    try:
        flops = step_flops(family, base, cfg, batches, device)
    except torch.OutOfMemoryError:  # the fp32 loop kernel needs more than the timed variants
        flops = None
    free(device)
    device_name = machine(device)["device_name"]
    out = {"images_per_step": images, "flops_per_step": flops, "variants": {}}
    for v in args.variants:
        teacher = copy.deepcopy(base)  # each loop lays out its own (ours: channels-last)
        net = MetamorphicNet(family, teacher.folded(), family.layers,
                             cfg, norm="fold").to(device).train()
        if v == "reference":
            step = ReferenceStep(net, teacher, args.activation, device)
        else:
            ex = Execution(args.precision, v == "ours_compiled", args.channels_last)
            step = OursStep(net, teacher, ex, device)
        try:
            r = timed(lambda: step(batches), device, args.steps, args.warmup)
            r["host_syncs"] = host_syncs(lambda: step(batches), device)
            r["images_per_s"] = images / r["median_s"]
            if flops:
                r.update(flop_rates(flops, r["median_s"], peak, device_name, device))
            if v != "reference":
                with ex.autocast(device):
                    r["inr_kernel"] = net.inr.kernel(torch.device(device))
        except torch.OutOfMemoryError:
            r = {"error": "out of memory (try a smaller --batch or --hidden)"}
        except Exception as e:  # a compile failure must not cost the other variants' figures
            r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        print(f"  {name} {v}: " + (f"{r['median_s'] * 1e3:.1f} ms/step, {r['images_per_s']:.1f} images/s, "
                                   f"{r.get('tflop_per_s', float('nan')):.3g} TFLOP/s"
                                   if "median_s" in r else r["error"]), flush=True)
        out["variants"][v] = r
        if device.type == "cuda" and "median_s" in r:
            r["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.reset_peak_memory_stats(device)
        del step, net, teacher
        free(device)
    ips = {v: r["images_per_s"] for v, r in out["variants"].items() if "images_per_s" in r}
    best = max((ips[v] for v in ("ours", "ours_compiled") if v in ips), default=None)
    if best and "reference" in ips:
        out["speedup_vs_reference"] = best / ips["reference"]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for train_step_<device>.json")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--batch", type=int, default=128, help="images per micro-batch")
    p.add_argument("--micro", type=int, default=4, choices=[1, 2, 3, 4], help="micro-batches (widths) per step")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--num-freqs", type=int, default=16)
    p.add_argument("--activation", default="relu")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="ours (default: on for cuda)")
    p.add_argument("--variants", nargs="+", default=None, choices=["ours", "ours_compiled", "reference"])
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    add_common_args(p)
    args, device = start(p, argv)
    gpu = device.type == "cuda"
    args.channels_last = gpu if args.channels_last is None else args.channels_last
    # compiled last: a slow compile then costs no other variant its figure
    args.variants = args.variants or (["ours", "reference", "ours_compiled"] if gpu else ["ours", "reference"])
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    print(f"train-step benchmark on {machine(device)['device_name']}: {settings}", flush=True)
    peak = announced_peak(device, args.peak_n)
    results = {}
    for name in args.cases:
        results[name] = bench_case(name, args, device, peak)
        path = write_json(args.out, f"train_step_{device.type}.json",
                          {"benchmark": "train_step", **machine(device), "settings": settings,
                           "command": "PYTHONPATH=. python benchmarks/train_step.py " + " ".join(argv or sys.argv[1:]),
                           "measured_bf16_matmul_peak": peak, "cases": results})
    for name, r in results.items():
        print(f"{name}: speed-up vs reference {r.get('speedup_vs_reference')}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
