"""One width-parametric ResNet builder for every family member.

A `ResNetFamily` describes topology once: which layers exist, which *channel group* each
layer reads and writes, and how data flows through blocks. A channel group is a set of
channels that must share one size and one permutation (a residual "clique": the stream of a
stage, or the hidden width inside a block). Everything width-dependent — the teacher, the
generated student, smoothing, coordinates, parameter counts — is derived from the groups, so
no family needs code of its own beyond its constructor arguments.

The topology is walked by `ResNetFamily.forward`, which takes a `layer` callable. The BN
teacher, the functional student (generated weights) and the exported plain network all use
this one walker; only the callable differs.

The family interface (`Layer`, `apply_layer`, `parameter_count`, `Teacher`) lives in
models/family.py, shared with the other families (models/lenet.py); build a family by name
with `models.build_family`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch
import torch.nn.functional as F

from .family import CLASSES, IMAGE, Block, Layer, scale_sizes


@dataclass(frozen=True)
class ResNetFamily:
    """CIFAR-style (3×3 stem) or ImageNet-style (7×7/2 stem + max-pool) ResNets.

    `channels` are the full (teacher) widths of the stages; bottleneck blocks expand the
    stage width by 4 on the residual stream.
    """

    name: str
    depths: tuple[int, ...]
    channels: tuple[int, ...]
    bottleneck: bool = False
    imagenet_stem: bool = False
    in_channels: int = 3
    num_classes: int = 10
    norm: str = "batch"  # "batch" (folded away) or "group" (GroupNorm(1, C), kept in the student)

    @property
    def expansion(self) -> int:
        return 4 if self.bottleneck else 1

    @property
    def stem(self) -> Layer:
        k, s = (7, 2) if self.imagenet_stem else (3, 1)
        return Layer("stem", IMAGE, "stream0", k, s, self.norm == "group")

    @cached_property
    def blocks(self) -> tuple[Block, ...]:
        return _blocks(self)

    @property
    def fc(self) -> Layer:
        return Layer("fc", self.blocks[-1].convs[-1].out_group, CLASSES, k=0)

    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        """Every layer in forward order (a block's branch, then its shortcut)."""
        out = [self.stem]
        for b in self.blocks:
            out += list(b.convs) + ([b.shortcut] if b.shortcut else [])
        return tuple(out + [self.fc])

    def full_sizes(self) -> dict[str, int]:
        """Teacher size of every channel group."""
        sizes = {IMAGE: self.in_channels, CLASSES: self.num_classes,
                 "stream0": self.channels[0]}
        for b in self.blocks:
            width = self.channels[b.stage - 1]
            for c in b.convs:
                sizes[c.out_group] = width * (self.expansion if c is b.convs[-1] else 1)
        return sizes

    def inner_groups(self, block: Block) -> list[str]:
        """The hidden widths of a block: the groups its branch creates and consumes."""
        return [c.out_group for c in block.convs[:-1]]

    def scalable_groups(self) -> frozenset[str]:
        """The widths `meta.scale=inner` varies: every block's hidden widths (streams stay)."""
        return frozenset(g for b in self.blocks for g in self.inner_groups(b))

    def sizes(self, fraction: float, groups: set[str] | frozenset[str]) -> dict[str, int]:
        """Group sizes when `groups` are scaled to `fraction` of full width (others full)."""
        return scale_sizes(self.full_sizes(), fraction, groups)

    def forward(self, x: torch.Tensor, layer: Callable[[Layer, torch.Tensor], torch.Tensor],
                alpha: Callable[[Block], torch.Tensor | float] = lambda b: 1.0) -> torch.Tensor:
        """Walk the topology; `layer` applies one conv/linear (+ whatever norm it owns)."""
        x = F.relu(layer(self.stem, x))
        if self.imagenet_stem:
            x = F.max_pool2d(x, 3, 2, 1)
        for b in self.blocks:
            h = x
            for i, c in enumerate(b.convs):
                h = layer(c, h)
                if i < len(b.convs) - 1:
                    h = F.relu(h)
            skip = layer(b.shortcut, x) if b.shortcut else x
            x = F.relu(skip + alpha(b) * h)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return layer(self.fc, x)


def _blocks(f: ResNetFamily) -> tuple[Block, ...]:
    blocks, stream, stream_width = [], "stream0", f.channels[0]
    conv = functools.partial(Layer, scale=f.norm == "group")
    for s, (depth, width) in enumerate(zip(f.depths, f.channels), start=1):
        for j in range(depth):
            name = f"layer{s}.{j}"
            stride = 2 if (j == 0 and s > 1) else 1
            out_width = width * f.expansion
            needs_proj = stride != 1 or stream_width != out_width
            out_stream = f"{name}.out" if needs_proj else stream
            if f.bottleneck:  # torchvision places the stride on the 3×3 conv
                convs = (conv(f"{name}.conv1", stream, f"{name}.mid1", 1, 1),
                         conv(f"{name}.conv2", f"{name}.mid1", f"{name}.mid2", 3, stride),
                         conv(f"{name}.conv3", f"{name}.mid2", out_stream, 1, 1))
            else:
                convs = (conv(f"{name}.conv1", stream, f"{name}.mid", 3, stride),
                         conv(f"{name}.conv2", f"{name}.mid", out_stream, 3, 1))
            shortcut = conv(f"{name}.down", stream, out_stream, 1, stride) if needs_proj else None
            blocks.append(Block(name, s, j, convs, shortcut))
            stream, stream_width = out_stream, out_width
    return tuple(blocks)


FAMILIES: dict[str, dict] = {
    "resnet20": dict(depths=(3, 3, 3), channels=(16, 32, 64)),
    "resnet56": dict(depths=(9, 9, 9), channels=(16, 32, 64)),
    "resnet18": dict(depths=(2, 2, 2, 2), channels=(64, 128, 256, 512), imagenet_stem=True),
    "resnet50": dict(depths=(3, 4, 6, 3), channels=(64, 128, 256, 512), imagenet_stem=True,
                     bottleneck=True),
}


def build_resnet(name: str, width: float = 1.0, channels: tuple[int, ...] | None = None,
                 in_channels: int = 3, num_classes: int = 10) -> ResNetFamily:
    """`width` multiplies the stage channels; an explicit `channels` list overrides both."""
    if name not in FAMILIES:
        raise ValueError(f"unknown ResNet family {name!r} (allowed: {', '.join(FAMILIES)})")
    spec = dict(FAMILIES[name])
    base = tuple(channels) if channels else tuple(max(1, round(width * c)) for c in spec.pop("channels"))
    spec.pop("channels", None)
    if len(base) != len(spec["depths"]):
        raise ValueError(f"model.channels needs {len(spec['depths'])} entries for {name}, got {len(base)}")
    return ResNetFamily(name, channels=base, in_channels=in_channels, num_classes=num_classes, **spec)

