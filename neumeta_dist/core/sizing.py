"""How big the INR's heads are for a family, and what generating its weights costs next to
training the network on them: the sizing rule the ImageNet and CIFAR-100 configs follow.

A head (one residual MLP per generated tensor, core/inr.py) maps a tensor's coordinates to
its kernels. Two things bound its hidden width:
- **capacity** grows with the channels it must tell apart: 4 × the widest channel group a
  generated tensor touches, at least 128 (the width-0.5 evidence: 128 × 3 heads beat 64 × 2
  on 8/16/32 channels, docs/w050/results.md) and at most 512 (the 2025 authors' heads);
- **compute**: every micro-batch generates its network anew, so one generation (forward and
  backward, at full width, where it is dearest) may cost at most as much as training the
  student on that micro-batch. The INR's FLOPs grow with coordinates × hidden², the student's
  with images × MACs: for ResNet-50 the capacity bound alone (512) would spend 6× the
  student's compute on making its weights.
The suggestion is the largest multiple of 64 that meets both, never under 128. Fourier bands
follow the same widths: frequencies above log2(2 × widest channels) alias under coordinate
noise (docs/design: method.md), so `num_freqs = max(8, ⌈log2(2 × widest)⌉)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.family import CLASSES, IMAGE, Family, Layer, layer_areas, mac_count, parameter_count
from .inr import INR

HIDDEN_MIN, HIDDEN_MAX, HIDDEN_STEP = 128, 512, 64
COORD_DIM = 6  # (layer, out, in, layers, out size, in size): core/coords.py


def widest_channels(family: Family, layers: tuple[Layer, ...]) -> int:
    """The largest channel group a generated tensor reads or writes, at full width."""
    sizes = family.full_sizes()
    return max(sizes[g] for l in layers for g in (l.in_group, l.out_group) if g not in (IMAGE, CLASSES))


def coordinates(family: Family, layers: tuple[Layer, ...]) -> int:
    """Coordinates the INR evaluates to generate `layers` at full width: one per (out, in)
    channel pair of a weight (its k × k kernel is one output row) and one per bias entry."""
    sizes = family.full_sizes()
    return sum(sizes[l.out_group] * (sizes[l.in_group] + 1) for l in layers)


@dataclass(frozen=True)
class GenerationCost:
    """FLOPs of one full-width generation (forward + backward) and of one student training
    micro-batch (forward + backward of every conv and linear), and their ratio."""

    generation: float
    student: float

    @property
    def ratio(self) -> float:
        return self.generation / self.student


def generation_cost(family: Family, layers: tuple[Layer, ...], hidden: int, depth: int, num_freqs: int,
                    batch: int, image_size: int) -> GenerationCost:
    """Matmul FLOPs (2 per multiply-add; a backward costs twice its forward)."""
    per_coord = COORD_DIM * 2 * num_freqs * hidden + depth * hidden * hidden + hidden * _out_dim(layers)
    student = mac_count(family, family.full_sizes(), layer_areas(family, image_size))
    return GenerationCost(3 * 2 * coordinates(family, layers) * per_coord, 3 * 2 * batch * student)


def suggested_hidden(family: Family, layers: tuple[Layer, ...], depth: int, batch: int, image_size: int) -> int:
    """The heads' hidden width by the module's rule."""
    cap = min(HIDDEN_MAX, max(HIDDEN_MIN, 4 * widest_channels(family, layers)))
    freqs = suggested_freqs(family, layers)
    fits = [h for h in range(HIDDEN_MIN, cap + 1, HIDDEN_STEP)
            if generation_cost(family, layers, h, depth, freqs, batch, image_size).ratio <= 1.0]
    return max(fits, default=HIDDEN_MIN)


def suggested_freqs(family: Family, layers: tuple[Layer, ...]) -> int:
    return max(8, math.ceil(math.log2(2 * widest_channels(family, layers))))


def budget_lines(cfg, family: Family, n_train: int, image_size: int) -> list[str]:
    """What one GPU (one process) spends per stage under `cfg`, as the config headers state it
    and `neumeta-dist plan` prints it: steps, images, epochs, the INR against the network, and
    a step's FLOPs. `n_train`: the training split's images; `image_size`: the side fed in."""
    from ..recipe.stages import generated_layers, stage_plan, step_images, steps_per_stage

    layers = generated_layers(family, cfg.meta.generated)
    stages = stage_plan(cfg, family)
    steps = steps_per_stage(cfg, n_train)
    per_step = step_images(cfg)
    i, b = cfg.inr, cfg.data.batch_size
    cost = generation_cost(family, layers, i.hidden, i.layers, i.num_freqs, b, image_size)
    heads = 2 * len(layers) if i.heads == "per_tensor" else 1  # a weight and a bias per layer
    with torch.device("meta"):  # shapes only: counting a 60 M-parameter INR allocates nothing
        inr = sum(p.numel() for p in INR(heads, _out_dim(layers), i.hidden, i.layers,
                                         i.num_freqs, i.activation).parameters())
    net = parameter_count(family, family.full_sizes())
    hint = (f"{suggested_hidden(family, layers, i.layers, b, image_size)} × {i.layers}, "
            f"{suggested_freqs(family, layers)} bands")
    return [f"{len(stages)} INR stage(s) of {steps:,} optimiser steps × {cfg.train.widths_per_step} micro-batches "
            f"× {b} images = {steps * per_step / 1e6:.2f} M images = {steps * per_step / n_train:.1f} epochs "
            f"of {n_train:,}",
            f"INR: {heads} heads of {i.hidden} × {i.layers}, {i.num_freqs} Fourier bands = {inr / 1e6:.2f} M "
            f"parameters (the network at full width: {net / 1e6:.2f} M; core/sizing.py suggests {hint})",
            f"one full-width micro-batch: generation {_flop(cost.generation)} + student {_flop(cost.student)} "
            f"(forward + backward; ratio {cost.ratio:.2f})"]


def _out_dim(layers: tuple[Layer, ...]) -> int:
    """The INR's outputs per coordinate: the largest kernel's K × K (MetamorphicNet.kernel)."""
    return max(max(l.k, 1) for l in layers) ** 2


def _flop(n: float) -> str:
    return f"{n / 1e12:.2f} TFLOP" if n >= 1e12 else f"{n / 1e9:.1f} GFLOP"
