"""A plain network at one width: generated once, saved, loadable without the INR."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import atomic_torch_save, load_torch
from .models import family_from_dict
from .models.family import Family, apply_layer


class PlainNet(nn.Module):
    """The folded network (conv + bias) at fixed sizes; its forward is the family walker."""

    def __init__(self, family: Family, weights: dict[str, torch.Tensor], alphas: dict[str, float]):
        super().__init__()
        self.family, self.alphas = family, dict(alphas)
        self.weights = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v.detach().clone())
                                         for k, v in weights.items()})

    def _w(self) -> dict[str, torch.Tensor]:
        return {k.replace("__", "."): v for k, v in self.weights.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._w()
        return self.family.forward(x, lambda s, h: apply_layer(s, h, w), lambda b: self.alphas.get(b.name, 1.0))


def materialise(net, weights: dict[str, torch.Tensor]) -> PlainNet:
    """Generated tensors + the fixed ones + α values → one standalone network."""
    full = net.weights(weights)
    tensors = {n: full[n].detach().cpu() for spec in net.family.layers for n in spec.tensor_names()}
    return PlainNet(net.family, tensors, {b: a.item() for b, a in net.alphas().items()})


def save_exported(plain: PlainNet, path: Path, width: float) -> None:
    atomic_torch_save({"family": dataclasses.asdict(plain.family), "width": width, "alphas": plain.alphas,
                       "weights": plain._w()}, path)


def load_exported(path: Path) -> PlainNet:
    art = load_torch(path, "exported network")
    family = family_from_dict(art["family"])  # ResNet or LeNet, from the saved family's name
    return PlainNet(family, art["weights"], art["alphas"]).eval()
