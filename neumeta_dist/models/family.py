"""The interface every network family speaks, and what is built on it alone.

A family (models/resnet.py, models/lenet.py) describes its topology as layers between
*channel groups* and walks it in `forward(x, layer)`. `Layer`, `apply_layer`,
`parameter_count` and the BN `Teacher` use only that interface, so the rest of the package
(teacher, smoothing, coordinates, the metamorphic network, export) never asks which family it
holds; construction by name lives in the registry (`models/__init__.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE, CLASSES = "image", "classes"  # the two groups that never change size


@dataclass(frozen=True)
class Layer:
    """A conv (k > 0) or linear (k == 0) layer between two channel groups."""

    name: str
    in_group: str
    out_group: str
    k: int = 3
    stride: int = 1
    scale: bool = False  # followed by a width-independent GroupNorm with its own per-channel scale

    @property
    def is_linear(self) -> bool:
        return self.k == 0

    @property
    def tensors(self) -> tuple[str, ...]:
        """Its tensors: the weight, then per-output-channel ones (bias = BN-folded bias or GN shift)."""
        return ("weight", "bias", "scale") if self.scale else ("weight", "bias")

    def tensor_names(self) -> list[str]:
        return [f"{self.name}.{kind}" for kind in self.tensors]

    def weight_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        o, i = sizes[self.out_group], sizes[self.in_group]
        return (o, i) if self.is_linear else (o, i, self.k, self.k)


def scale_sizes(full: Mapping[str, int], fraction: float, groups: set[str] | frozenset[str]) -> dict[str, int]:
    """`groups` scaled to `fraction` of their full size (at least 1 channel), others full.

    One rounding rule for every family, so a width means the same sizes everywhere.
    """
    return {g: max(1, round(fraction * n)) if g in groups else n for g, n in full.items()}


@dataclass(frozen=True)
class Block:
    name: str  # e.g. "layer2.0"
    stage: int  # 1-based
    index: int  # block index inside the stage
    convs: tuple[Layer, ...]  # the residual branch, in order
    shortcut: Layer | None  # projection, or None for identity


class Family(Protocol):
    """What a network family provides (ResNetFamily, LeNetFamily): frozen dataclasses, so
    `dataclasses.asdict` saves one and `models.family_from_dict` rebuilds it."""

    name: str
    in_channels: int
    num_classes: int
    norm: str  # "batch" (BN, folded away) or "group" (GroupNorm(1, C), kept in the student)

    @property
    def layers(self) -> tuple[Layer, ...]: ...

    @property
    def blocks(self) -> tuple[Block, ...]: ...

    @property
    def stem(self) -> Layer: ...

    @property
    def fc(self) -> Layer: ...

    def full_sizes(self) -> dict[str, int]: ...

    def sizes(self, fraction: float, groups: set[str] | frozenset[str]) -> dict[str, int]: ...

    def scalable_groups(self) -> frozenset[str]: ...

    def forward(self, x: torch.Tensor, layer: Callable[[Layer, torch.Tensor], torch.Tensor]) -> torch.Tensor: ...


def apply_layer(spec: Layer, x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Functional conv/linear with weights from a `{name: tensor}` dict (folded: with bias;
    GroupNorm layers: conv, then GroupNorm(1) with the layer's scale and bias)."""
    w, b = weights[f"{spec.name}.weight"], weights.get(f"{spec.name}.bias")
    if spec.is_linear:
        return F.linear(x, w, b)
    if spec.scale:
        y = F.conv2d(x, w, None, stride=spec.stride, padding=spec.k // 2)
        return F.group_norm(y, 1, weights[f"{spec.name}.scale"], b)
    return F.conv2d(x, w, b, stride=spec.stride, padding=spec.k // 2)


def parameter_count(family: Family, sizes: Mapping[str, int]) -> int:
    """Parameters of the student network (folded convs + biases, GN scales) at `sizes`."""
    total = 0
    for spec in family.layers:
        w = spec.weight_shape(sizes)
        total += int(torch.Size(w).numel()) + (len(spec.tensors) - 1) * w[0]
    return total


def layer_areas(family: Family, image_size: int) -> dict[str, int]:
    """Output positions (H·W) of every layer for one square `image_size` image (1 for a linear).

    Strides and pooling fix them, not widths, so one shape-only walk on the meta device (no
    memory, no arithmetic) serves every width of the family.
    """
    sizes, areas = family.full_sizes(), {}
    with torch.device("meta"):
        weights = {f"{s.name}.{kind}": torch.empty(s.weight_shape(sizes) if kind == "weight" else (sizes[s.out_group],))
                   for s in family.layers for kind in s.tensors}

        def layer(spec: Layer, x: torch.Tensor) -> torch.Tensor:
            y = apply_layer(spec, x, weights)
            areas[spec.name] = 1 if spec.is_linear else y.shape[-1] * y.shape[-2]
            return y
        family.forward(torch.empty(1, family.in_channels, image_size, image_size), layer)
    return areas


def mac_count(family: Family, sizes: Mapping[str, int], areas: Mapping[str, int]) -> int:
    """Multiply-accumulates of one image through every conv and linear at `sizes` (`areas`:
    `layer_areas`). Biases, BN (folded), activations, pooling and residual adds are not
    counted: the convention behind torchvision's "GFLOPS" (ResNet-18: 1.81 G at 224 px)."""
    return sum(areas[s.name] * math.prod(s.weight_shape(sizes)) for s in family.layers)


class Teacher(nn.Module):
    """A BN network of the family (bias-free convs): the full-width teacher trained as the first
    stage, or — given `sizes` — an individually trained network of another width (a baseline)."""

    def __init__(self, family: Family, sizes: Mapping[str, int] | None = None):
        super().__init__()
        self.family = family
        sizes = sizes or family.full_sizes()
        self.convs = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        for spec in family.layers:
            key = _key(spec.name)
            o, i = sizes[spec.out_group], sizes[spec.in_group]
            if spec.is_linear:
                self.convs[key] = nn.Linear(i, o)
                continue
            self.convs[key] = nn.Conv2d(i, o, spec.k, spec.stride, spec.k // 2, bias=False)
            self.norms[key] = nn.GroupNorm(1, o) if spec.scale else nn.BatchNorm2d(o)
        for b in family.blocks:  # zero-init the last BN of each branch: standard for ResNets
            nn.init.zeros_(self.norms[_key(b.convs[-1].name)].weight)

    def _layer(self, spec: Layer, x: torch.Tensor) -> torch.Tensor:
        key = _key(spec.name)
        x = self.convs[key](x)
        return self.norms[key](x) if key in self.norms else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.family.forward(x, self._layer)

    @torch.no_grad()
    def folded(self) -> dict[str, torch.Tensor]:
        """BN folded into the preceding conv: w' = w·γ/σ, b' = β − μ·γ/σ (eval-mode exact).

        GroupNorm depends on each sample, so it cannot be folded: a GN layer gives its conv
        weight, and its GN shift and scale as the layer's `bias` and `scale`.
        """
        out = {}
        for spec in self.family.layers:
            key = _key(spec.name)
            conv = self.convs[key]
            if spec.is_linear:
                w, b = conv.weight.clone(), conv.bias.clone()
            elif spec.scale:
                gn = self.norms[key]
                w, b = conv.weight.clone(), gn.bias.clone()
                out[f"{spec.name}.scale"] = gn.weight.detach().clone()
            else:
                bn = self.norms[key]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                w = conv.weight * scale[:, None, None, None]
                b = bn.bias - bn.running_mean * scale
            out[f"{spec.name}.weight"], out[f"{spec.name}.bias"] = w.detach(), b.detach()
        return out


def _key(name: str) -> str:  # ModuleDict keys may not contain dots
    return name.replace(".", "_")
