"""Per-width recalibration: the `recalib` way of replacing batch norm.

The student has no normalisation (BN is folded into the teacher's convs), so a generated
network at a reduced width sees activation statistics that drift from the full-width ones.
BN recalibration (as in slimmable networks) re-estimates statistics per width; here it is
done once per width on a calibration batch and *folded* back into the generated tensors:
each generated conv's output channel gets the affine map that gives it the mean and standard
deviation of the same layer's channel at the same relative position (channel o of n ↔
channel ⌊o·N/n⌋; nested coordinates: channel o) in the *full-width generated* network. The full width is the reference,
not the teacher: once trained, the student's layers legitimately differ from the teacher's
(measured: renormalising to the teacher's statistics cost 20 points at full width), and
at full width this recalibration is exactly the identity. Corrections are computed in forward order, each layer seeing the already
corrected ones, exactly as a BN layer in train mode would; `a·(W∗x + b) + c` is again a conv
with bias, so the result is a plain network and export needs nothing new.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..models.family import apply_layer


def channel_stats(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over batch and space."""
    dims = [0] + list(range(2, y.dim()))
    return y.mean(dims), y.std(dims, unbiased=False)


@torch.no_grad()
def layer_stats(net, weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Output statistics of every layer of the network that `weights` (all tensors) define."""
    stats, alphas = {}, net.alphas()

    def layer(spec, h):
        y = apply_layer(spec, h, weights)
        stats[spec.name] = channel_stats(y)
        return y
    net.family.forward(x, layer, lambda b: alphas.get(b.name, 1.0))
    return stats


@torch.no_grad()
def full_width_stats(net, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The recalibration targets: layer statistics of the noise-free full-width network."""
    was = net.training
    generated = net.eval().generate(1.0)
    net.train(was)
    return layer_stats(net, net.weights(generated), x)


@torch.no_grad()
def recalibrate(net, fraction: float, generated: Mapping[str, torch.Tensor], x: torch.Tensor,
                targets: dict | None = None, eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """`generated` with each generated conv's outputs renormalised to the full-width statistics;
    with `recalib_fixed` (meta.norm=recalib_all) every fixed conv too, its corrected tensors
    added to the returned dict (which `net.weights` reads before the fixed ones)."""
    return apply_corrections(net, generated, corrections(net, generated, x, targets, eps))


@torch.no_grad()
def corrections(net, generated: Mapping[str, torch.Tensor], x: torch.Tensor, targets: dict | None = None,
                eps: float = 1e-5) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each recalibrated conv's per-channel affine map (a, c): its outputs y become a·y + c.

    They are all the recalibration needs to know about the data: `apply_corrections` folds them
    into the tensors without an image, which is how a run keeps every width's recalibration
    (evaluation/calibration.py) and a finished run gives the evaluated network with no dataset at hand."""
    from .inr_init import subsample_index

    targets = targets if targets is not None else full_width_stats(net, x)
    full, alphas = net.weights(generated), net.alphas()
    generated_convs = {l.name for l in net.generated if not l.is_linear}
    maps = {}

    def layer(spec, h):  # each layer sees its uncorrected tensors, its input the corrected ones
        y = apply_layer(spec, h, full)
        if spec.is_linear or (spec.name not in generated_convs and not net.norm.recalib_fixed):
            return y
        mean, std = channel_stats(y)
        idx = subsample_index(len(mean), len(targets[spec.name][0]), y.device, net.nested)
        t_mean, t_std = targets[spec.name][0][idx], targets[spec.name][1][idx]
        a = t_std / (std + eps)
        c = t_mean - a * mean
        maps[spec.name] = (a, c)
        return y * a.view(1, -1, 1, 1) + c.view(1, -1, 1, 1)
    net.family.forward(x, layer, lambda b: alphas.get(b.name, 1.0))
    return maps


def apply_corrections(net, generated: Mapping[str, torch.Tensor],
                      maps: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """`generated` plus every corrected conv: a·(W∗x + b) + c is the conv (a·W, a·b + c)."""
    full, out = net.weights(generated), dict(generated)
    for name, (a, c) in maps.items():
        w, b = f"{name}.weight", f"{name}.bias"
        a, c = a.to(full[w].device), c.to(full[w].device)
        out[w] = full[w] * a.view(-1, *[1] * (full[w].dim() - 1))
        out[b] = full[b] * a + c
    return out
