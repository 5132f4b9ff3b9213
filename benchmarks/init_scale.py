"""Signal at initialisation: why a generated network does or does not train from its first step.

For a config and a trained teacher, builds the network each variant would start its stage
with and measures, on real validation images at full and narrowest width: the RMS of every
layer's output, the logits' spread, the cross-entropy, and the CE gradient's norm reaching the
INR. A network whose layer outputs shrink geometrically with depth ends in constant logits
(CE = ln classes) and a gradient too small to move it: an initialisation-scale failure, not a
limit of the method.

    python benchmarks/init_scale.py --config configs/protocol/neumeta.yaml \
        --teacher runs/protocol/seed0/teacher/teacher/teacher.pt --out docs/protocol/diagnosis/init_scale.json

Variants (each a set of overrides on the config): `all_layers` (every tensor generated, random
heads: the `neumeta_all_layers` row), `all_layers_warmup` (the same after the reconstruction
warm-up the recipe gives new heads, 1,500 steps), `authors_set` (the 2025 authors' metamorphic set, random
heads: their NeuMeta baseline), `all_layers_noreg` (all_layers without the L2 term on the
generated weights and the INR's weight decay) and `reference` (every tensor the folded teacher's: the target).

`--train-steps N` also trains every variant but `reference` for N optimiser
steps with the project's own stage loop (their configs' losses, optimiser and schedule) and
profiles the network after steps 1, 2, 5, 10, 20, … — what happens in the first steps, where
the `neumeta_all_layers` row's CE reaches ln 10 and stays.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from neumeta_dist.records import provenance
from neumeta_dist.config import load_config
from neumeta_dist.data import sample_images
from neumeta_dist.distributed.accelerator import make_accelerator
from neumeta_dist.recipe.inr_init import initialise_stage, reconstruction_warmup
from neumeta_dist.models.family import apply_layer
from neumeta_dist.training.probe import Callback
from neumeta_dist.training.context import RunContext
from neumeta_dist.training.teacher import build_reference, load_teacher
from neumeta_dist.training.trained import build_net
from neumeta_dist.training.loop import train_stage

VARIANTS = {
    "all_layers": ["meta.generated=all", "meta.norm=fold", "recipe.init=random", "recipe.warmup_steps=0"],
    "all_layers_warmup": ["meta.generated=all", "meta.norm=fold", "recipe.init=random", "recipe.warmup_steps=1500"],
    # the mechanism: without the L2 pull on the generated weights and the INR's weight decay
    "all_layers_noreg": ["meta.generated=all", "meta.norm=fold", "recipe.init=random", "recipe.warmup_steps=0",
                         "loss.reg=0", "train.weight_decay=0"],
    "authors_set": ["meta.generated=authors", "meta.norm=fold", "recipe.init=random", "recipe.warmup_steps=0"],
    "reference": ["meta.generated=all", "meta.norm=fold", "recipe.init=random", "recipe.warmup_steps=0"],
}


def profile(net, x: torch.Tensor, y: torch.Tensor, fraction: float, weights: dict | None = None) -> dict:
    """Layer-output RMS (in the family's order), logits' spread, CE and the CE gradient's norm on the INR."""
    net.zero_grad(set_to_none=True)
    generated = net.generate(fraction, noise=0.0) if weights is None else weights
    full = net.weights(generated)
    rms = {}

    def layer(spec, h):
        out = apply_layer(spec, h, full)
        rms[spec.name] = out.detach().pow(2).mean().sqrt().item()
        return out
    logits = net.family.forward(x, layer, lambda b: net.alphas().get(b.name, 1.0))
    ce = F.cross_entropy(logits, y)
    grad = float("nan")
    if weights is None:
        ce.backward()
        grad = math.sqrt(sum(p.grad.pow(2).sum().item() for p in net.inr.parameters() if p.grad is not None))
    return {"layer_rms": rms, "logit_std": logits.detach().std().item(), "ce": ce.item(),
            "ce_grad_norm_inr": grad, "accuracy": (logits.argmax(1) == y).float().mean().item()}


class Trajectory(Callback):
    """Profiles the stage's network (full width) after chosen steps, from the loop's own state."""

    def __init__(self, ctx, x, y, steps: set[int]):
        self.ctx, self.x, self.y, self.steps, self.rows, self.state = ctx, x, y, steps, {}, None

    def on_start(self, state) -> None:
        self.state = state

    def on_step_end(self, done: int) -> None:
        if done not in self.steps:
            return
        net = build_net(self.ctx.cfg, self.ctx.family, self.ctx.reference["weights"])
        net.load_state_dict(self.state())
        net.activate(self.ctx.stages[-1].layers)
        r = profile(net.train(), self.x, self.y, 1.0)
        r["layer_rms"] = {k: v for k, v in list(r["layer_rms"].items())[::4]}  # every 4th layer: the trend
        self.rows[done] = r
        print(f"  step {done}: CE {r['ce']:.3f}, logits sd {r['logit_std']:.3g}, accuracy {r['accuracy']:.3f}, "
              f"layer RMS {', '.join(f'{v:.2g}' for v in r['layer_rms'].values())}, CE grad {r['ce_grad_norm_inr']:.3g}")


def trajectory(cfg, accelerator, art, reference, steps: int, images: int) -> dict:
    ctx = RunContext.load(cfg).with_teacher(art, reference)
    x, y = sample_images(ctx.splits.val, images), ctx.splits.val.tensors[1][:images]
    marks = {s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if s <= steps} | {steps}
    probe = Trajectory(ctx, x, y, marks)
    train_stage(ctx, accelerator, len(ctx.stages), callback=probe)
    return {str(k): v for k, v in sorted(probe.rows.items())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--teacher", required=True, help="a teacher.pt of this config's family")
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--train-steps", type=int, default=0, help="also train every variant but reference this long")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    accelerator = make_accelerator()
    out = {"variants": {}, **provenance.record(teacher=args.teacher)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in VARIANTS.items():
            cfg = load_config(args.config, [*args.overrides, *extra, f"teacher.checkpoint={args.teacher}",
                                            f"run_dir={tmp}/{name}"])
            ctx = RunContext.load(cfg)
            art = load_teacher(cfg, ctx.family)
            reference = build_reference(cfg, accelerator, ctx.family, art, ctx.splits)
            torch.manual_seed(cfg.train.seed)
            net = build_net(cfg, ctx.family, reference["weights"])
            stage = ctx.stages[-1]  # every unit of the plan: what a one-stage run starts with
            initialise_stage(net, stage, cfg.recipe.init, cfg.train.seed)
            net.activate(stage.layers)
            fractions = [1.0, cfg.meta.max_width, cfg.meta.min_width]
            reconstruction_warmup(net, cfg.recipe.warmup_steps, cfg.recipe.warmup_lr, fractions,
                                  cfg.loss.recon_weighting)
            x, y = sample_images(ctx.splits.val, args.images), ctx.splits.val.tensors[1][:args.images]
            weights = ({n: reference["weights"][n] for n in net.generated_names()} if name == "reference" else None)
            out["variants"][name] = {"overrides": extra, "generated": len(net.generated_names()),
                                     "warmup_steps": cfg.recipe.warmup_steps,
                                     **{f"width_{f:g}": profile(net, x, y, f, weights)
                                        for f in ([1.0] if weights else sorted({1.0, cfg.meta.min_width}))}}
            r = out["variants"][name]["width_1"]
            rms = list(r["layer_rms"].values())
            print(f"{name}: CE {r['ce']:.3f} (ln 10 = 2.303), logits sd {r['logit_std']:.3g}, layer RMS "
                  f"first {rms[0]:.3g} → last conv {rms[-2]:.3g}, CE grad on the INR {r['ce_grad_norm_inr']:.3g}")
            if args.train_steps and name != "reference":
                steps = [f"train.max_steps={args.train_steps}", "train.select_every=0", "train.save_every=0"]
                cfg = load_config(args.config, [*args.overrides, *extra, *steps, f"teacher.checkpoint={args.teacher}",
                                                f"run_dir={tmp}/{name}_trained"])
                out["variants"][name]["trajectory"] = trajectory(cfg, accelerator, art, reference, args.train_steps,
                                                                 args.images)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
