"""docs/families.md's worked example, run: a new architecture family — a stem, one residual
block whose hidden width follows the sampled width, a classifier — added in this file alone,
registered by name, trained one step through the whole pipeline, and generated at two widths."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

import neumeta_dist as nd
from neumeta_dist.models.family import CLASSES, IMAGE, Block, Layer, scale_sizes
from neumeta_dist.models.registry import register_family

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


# --- the family: what docs/families.md walks through ------------------------------------------
@dataclass(frozen=True)  # frozen: dataclasses.asdict saves it with every artefact, the registry rebuilds it
class TinyResFamily:
    name: str = "tinyres"
    channels: tuple[int, ...] = (8, 16)  # full (teacher) width: the residual stream, the block's hidden width
    in_channels: int = 1
    num_classes: int = 10
    norm: str = "batch"  # BN in the teacher, folded away in the student

    @property
    def stem(self) -> Layer:  # a layer joins two channel groups; its tensors are named after it
        return Layer("stem", IMAGE, "s")

    @property
    def fc(self) -> Layer:
        return Layer("fc", "s", CLASSES, k=0)  # k=0: linear

    @cached_property
    def blocks(self) -> tuple[Block, ...]:
        convs = (Layer("block.conv1", "s", "h"), Layer("block.conv2", "h", "s"))
        return (Block("block", stage=1, index=0, convs=convs, shortcut=None),)  # identity shortcut

    @cached_property
    def layers(self) -> tuple[Layer, ...]:  # every layer in forward order
        return (self.stem, *self.blocks[0].convs, self.fc)

    def full_sizes(self) -> dict[str, int]:
        return {IMAGE: self.in_channels, "s": self.channels[0], "h": self.channels[1], CLASSES: self.num_classes}

    def scalable_groups(self) -> frozenset[str]:
        return frozenset({"h"})  # the residual stream keeps its width, as the ResNets' does

    def sizes(self, fraction: float, groups: set[str] | frozenset[str]) -> dict[str, int]:
        return scale_sizes(self.full_sizes(), fraction, groups)  # the one rounding rule

    def forward(self, x: torch.Tensor, layer: Callable[[Layer, torch.Tensor], torch.Tensor],
                alpha: Callable = lambda b: 1.0) -> torch.Tensor:
        """The topology, once: `layer` runs a conv/linear (teacher: conv + BN; student: the
        generated tensors); `alpha` is a block's SkipInit scale (meta.norm=skipinit)."""
        x = F.relu(layer(self.stem, x))
        block = self.blocks[0]
        h = F.relu(layer(block.convs[0], x))
        x = F.relu(x + alpha(block) * layer(block.convs[1], h))
        return layer(self.fc, torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build_tinyres(name: str, width: float = 1.0, channels: tuple[int, ...] | None = None,
                  in_channels: int = 1, num_classes: int = 10) -> TinyResFamily:
    """model.width multiplies the default channels; model.channels replaces them."""
    base = tuple(channels) if channels else tuple(max(1, round(width * c)) for c in (8, 16))
    return TinyResFamily(name, base, in_channels, num_classes)


register_family("tinyres", TinyResFamily, build_tinyres)
# --- end of the family ---------------------------------------------------------------------


def test_a_family_added_outside_the_package_trains_and_generates_at_two_widths(tmp_path):
    run = nd.train(ROOT / "configs/demo.yaml", [
        "model.family=tinyres", "model.width=1.0", "data.dataset=synthetic", "data.train_limit=128", "data.test_limit=64",
        "data.batch_size=32", "teacher.epochs=1", "meta.generated=all", "inr.hidden=16", "inr.layers=1",
        "inr.num_freqs=4", "train.max_steps=1", "train.widths_per_step=2", "recipe.warmup_steps=0",
        "eval.widths=[0.5,1.0]", "eval.samples=1", "eval.calib_samples=32", f"run_dir={tmp_path / 'run'}"])
    assert run.stage == 1 and run.net.family == TinyResFamily()
    assert {w.width for w in run.widths} == {0.5, 1.0}
    x = torch.randn(4, 1, 16, 16)
    for width, hidden in ((0.5, 8), (1.0, 16)):
        net = run.network(width=width)
        w = dict(net.named_parameters())
        assert w["weights.block__conv1__weight"].shape == (hidden, 8, 3, 3)  # the hidden width follows
        assert w["weights.block__conv2__weight"].shape == (8, hidden, 3, 3)
        assert w["weights.stem__weight"].shape == (8, 1, 3, 3)  # the stream does not
        assert net(x).shape == (4, 10) and torch.isfinite(net(x)).all()
        assert sum(p.numel() for p in net.parameters()) == run.params(width)
    assert run.params(0.5) < run.params(1.0)
