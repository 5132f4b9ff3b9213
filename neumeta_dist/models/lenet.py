"""NeuMeta's Fashion-MNIST network as a family: three 5×5 convs, each with max-pool, then a linear head.

It speaks the family interface (models/family.py) (layers between channel groups, a topology
walker), so the BN teacher, folding, smoothing, coordinates and export work on it unchanged.
There are no residual blocks: every conv writes a group of its own ("c1", "c2", "c3"), and
all of them follow the sampled width — NeuMeta generates this whole network (widths 8..32).

The head reads a global average pool rather than the flattened 3×3 map, so the linear
layer's input group is exactly the last conv's channels and its shape scales with the width
like any conv's (a flatten would tie it to channels × spatial positions).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch
import torch.nn.functional as F

from .family import CLASSES, IMAGE, Layer, scale_sizes

KERNEL = 5  # padding k // 2 = 2 keeps 28×28; the pools then give 14, 7, 3
DEFAULT_CHANNELS = (32, 32, 32)  # width 1.0; NeuMeta trains 8..32 of these


@dataclass(frozen=True)
class LeNetFamily:
    name: str = "lenet"
    channels: tuple[int, ...] = DEFAULT_CHANNELS  # full (teacher) width of each conv
    in_channels: int = 1
    num_classes: int = 10
    norm: str = "batch"  # "batch" (folded away) or "group" (GroupNorm(1, C), kept in the student)

    blocks = ()  # no residual blocks: nothing for `alpha` or block-wise recipes to act on

    @cached_property
    def convs(self) -> tuple[Layer, ...]:
        groups = [IMAGE] + [f"c{i}" for i in range(1, len(self.channels) + 1)]
        return tuple(Layer(f"conv{i}", groups[i - 1], groups[i], KERNEL, scale=self.norm == "group") for i in range(1, len(groups)))

    @property
    def stem(self) -> Layer:
        return self.convs[0]

    @property
    def fc(self) -> Layer:
        return Layer("fc", self.convs[-1].out_group, CLASSES, k=0)

    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        return self.convs + (self.fc,)

    def full_sizes(self) -> dict[str, int]:
        sizes = {IMAGE: self.in_channels, CLASSES: self.num_classes}
        sizes.update({c.out_group: n for c, n in zip(self.convs, self.channels)})
        return sizes

    def inner_groups(self, block) -> list[str]:
        return []  # no blocks, so no block-hidden widths

    def scalable_groups(self) -> frozenset[str]:
        """Every conv's output: the widths NeuMeta varies on this network."""
        return frozenset(c.out_group for c in self.convs)

    def sizes(self, fraction: float, groups: set[str] | frozenset[str]) -> dict[str, int]:
        return scale_sizes(self.full_sizes(), fraction, groups)

    def forward(self, x: torch.Tensor, layer: Callable[[Layer, torch.Tensor], torch.Tensor],
                alpha: Callable = lambda b: 1.0) -> torch.Tensor:
        """conv (+ its norm, inside `layer`) → ReLU → 2×2 max-pool, per conv; then pool → linear.

        `alpha` is accepted for interface parity with ResNets and never called (no blocks).
        """
        for spec in self.convs:
            x = F.max_pool2d(F.relu(layer(spec, x)), 2)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return layer(self.fc, x)


def build_lenet(name: str = "lenet", width: float = 1.0, channels: tuple[int, ...] | None = None,
                in_channels: int = 1, num_classes: int = 10) -> LeNetFamily:
    """`width` multiplies the default channels (32, 32, 32); an explicit `channels` overrides both."""
    base = tuple(channels) if channels else tuple(max(1, round(width * c)) for c in DEFAULT_CHANNELS)
    if not base:
        raise ValueError("model.channels for lenet needs at least one entry")
    return LeNetFamily(name, channels=base, in_channels=in_channels, num_classes=num_classes)
