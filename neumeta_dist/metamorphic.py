"""The metamorphic network: INR + coordinate tables + the family's functional forward.

`MetamorphicNet.forward(x, fraction)` generates every generated tensor of the network at that
width in one INR call, fills the remaining layers with the (smoothed, folded) teacher's
weights, and runs the student functionally. Weight generation lives inside `forward` so that
DDP's gradient hooks and DeepSpeed's parameter gathering see one ordinary module call, and
autograd flows from the loss through the weights into the INR with no manual chain rule.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from .config import INRConfig
from .coords import CoordTable, build_table, centre_columns, normalise, split_output
from .inr import INR
from .models.resnet import Block, Layer, ResNetFamily, apply_layer, parameter_count


class MetamorphicNet(nn.Module):
    def __init__(self, family: ResNetFamily, reference: Mapping[str, torch.Tensor],
                 generated: tuple[Layer, ...], groups: frozenset[str], inr: INRConfig,
                 residual: str = "fold"):
        super().__init__()
        self.family, self.generated, self.groups = family, generated, groups
        self.coord_noise = inr.coord_noise
        self.kernel = max(max(l.k, 1) for l in generated)
        self.norm_width = max(family.full_sizes().values())
        names = [f"{l.name}.{kind}" for l in generated for kind in ("weight", "bias")]
        self.heads = {n: (i if inr.heads == "per_tensor" else 0) for i, n in enumerate(names)}
        self.inr = INR(len(set(self.heads.values())), self.kernel ** 2, inr.hidden, inr.layers,
                       inr.num_freqs, inr.activation, inr.residual_scale)
        # The smoothed, folded teacher: fixed layers come from it, and it is the
        # reconstruction target. Not persistent: it is rebuilt from the teacher artefact.
        for name, t in reference.items():
            self.register_buffer(_buf(name), t.detach().clone(), persistent=False)
        gen_names = {l.name for l in generated}
        self.alpha = nn.ParameterDict()
        if residual == "skipinit":  # a generated block starts as the identity (α = 0)
            for b in family.blocks:
                if any(c.name in gen_names for c in b.convs):
                    self.alpha[_buf(b.name)] = nn.Parameter(torch.zeros(()))
        self._tables: dict[tuple, tuple[CoordTable, list]] = {}

    # --- widths ---------------------------------------------------------------------------
    def sizes(self, fraction: float) -> dict[str, int]:
        return self.family.sizes(fraction, self.groups)

    def params_at(self, fraction: float) -> int:
        return parameter_count(self.family, self.sizes(fraction))

    def table(self, fraction: float) -> tuple[CoordTable, list]:
        """The (cached) coordinate table at `fraction` and each entry's output columns."""
        sizes = self.sizes(fraction)
        key = tuple(sorted(sizes.items()))
        device = self.inr.w_in.device
        cached = self._tables.get(key)
        if cached is None or cached[0].index.device != device:
            table = build_table(self.generated, sizes, self.norm_width, self.heads).to(device)
            cols = [c if c is None else c.to(device) for c in centre_columns(table, self.kernel)]
            cached = self._tables[key] = (table, cols)
        return cached

    # --- generation and forward -------------------------------------------------------------
    def generate(self, fraction: float, noise: float | None = None,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Every generated tensor at `fraction`, from one INR call."""
        table, cols = self.table(fraction)
        noise = self.coord_noise if noise is None else noise
        coords = normalise(table, noise if self.training else 0.0, generator)
        return split_output(self.inr(coords, table.segments, cols), table)

    def reference(self, name: str) -> torch.Tensor:
        return getattr(self, _buf(name))

    def forward(self, x: torch.Tensor, fraction: float = 1.0, noise: float | None = None,
                generator: torch.Generator | None = None,
                weights: Mapping[str, torch.Tensor] | None = None):
        """Logits of the width-`fraction` network, and the generated tensors used.

        Pass `weights` to run a network generated earlier (evaluation, merged samples).
        """
        generated = self.generate(fraction, noise, generator) if weights is None else weights
        full = _Weights(generated, self)
        return self.family.forward(x, lambda spec, h: apply_layer(spec, h, full), self._alpha), generated

    def _alpha(self, block: Block):
        key = _buf(block.name)
        return self.alpha[key] if key in self.alpha else 1.0


class _Weights(Mapping):
    """Generated tensors first, the teacher's for everything else (no copies made)."""

    def __init__(self, generated: Mapping[str, torch.Tensor], net: MetamorphicNet):
        self.generated, self.net = generated, net

    def __getitem__(self, name):
        if name in self.generated:
            return self.generated[name]
        return self.net.reference(name)

    def __iter__(self):
        return iter(self.generated)

    def __len__(self):
        return len(self.generated)


def _buf(name: str) -> str:
    return "ref_" + name.replace(".", "_")
