"""The reference design, re-implemented for comparison: NeuMeta's per-layer masked generation
and its training step (method.md §1, style.md's list of what not to do).

What exactly this reproduces, and what it deliberately does not:
- Coordinates: built per layer by nested Python loops over (out, in) channels, one row per
  (tensor, out, in) with the same six fields and normalisation as `core/coords.py` (entry / out /
  in divided by n_entries / out_size / fan_in, sizes divided by the normalising width); built
  once per width and cached, as the reference caches its per-width dictionary.
- INR: one separate MLP module per generated tensor (`nn.Linear` layers: Fourier features
  of the same frequencies, input layer, residual layers with a learnable scale, K·K outputs),
  the same width, depth, activation and initial residual scale as our stacked heads.
- Generation: one call whose forward loops over the layers, selects each layer's rows with a
  boolean mask of the layer-index column, runs that layer's MLP on them and scatters the
  result into a shared output (`out[mask] = mlp(x[mask])`); each tensor is then gathered by
  its row indices, 1×1 kernels and biases take the centre output, and weights are divided by
  their fan-in. Computed in fp32, as the reference runs (no autocast).
- Training step: a full network module per width kept alive (cached), generated weights
  pushed into `param.data`, the task loss backpropagated into the module's `.grad`s, then a
  second, manual backward of the generated tensors with those grads (plus the
  reconstruction and L2 terms, which depend on the weights directly); AdamW, clip by value.
- Not copied, because it would change the output (and is a bug): coordinate noise on the
  layer-index field and in-index of biases. Noise is drawn exactly as `coords.normalise`
  draws it, so for the same generator both designs emit the same weights
  (tests/test_perf_paths.py checks it by loading our INR's heads into these MLPs).
- Not added: anything slower than the design needs (no `.item()` per layer, no mask.any()).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn

from neumeta_dist.core.inr import ACTIVATIONS, INR, fourier_features
from neumeta_dist.models.family import Layer


class ReferenceMLP(nn.Module):
    """One layer's INR: Fourier features → Linear → residual Linear blocks → K·K outputs."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, layers: int, num_freqs: int,
                 activation: str, residual_scale: float):
        super().__init__()
        self.num_freqs, self.act = num_freqs, ACTIVATIONS[activation]
        self.inp = nn.Linear(in_dim * 2 * num_freqs, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.scales = nn.Parameter(torch.full((layers,), residual_scale))
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(fourier_features(x, self.num_freqs)))
        for scale, layer in zip(self.scales, self.hidden):
            h = h + scale * self.act(layer(h))
        return self.out(h)


class ReferenceINR(nn.Module):
    """A separate MLP per generated tensor; one call loops over them with boolean masks."""

    def __init__(self, num_layers: int, out_dim: int, hidden: int, layers: int, num_freqs: int,
                 activation: str = "relu", residual_scale: float = 0.1):
        super().__init__()
        self.out_dim = out_dim
        self.mlps = nn.ModuleList(ReferenceMLP(6, out_dim, hidden, layers, num_freqs, activation, residual_scale)
                                  for _ in range(num_layers))

    def forward(self, x: torch.Tensor, layer_id: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(len(x), self.out_dim)
        for i, mlp in enumerate(self.mlps):
            mask = layer_id == i
            out[mask] = mlp(x[mask]).to(out.dtype)  # (under autocast the MLP emits bf16)
        return out

    @classmethod
    def from_inr(cls, inr: INR, activation: str) -> "ReferenceINR":
        """The same function as `inr`: head h's stacked parameters become MLP h's Linears."""
        layers, hidden = len(inr.w_hid), inr.w_in.shape[2]
        ref = cls(inr.num_heads, inr.out_dim, hidden, layers, inr.num_freqs, activation)
        with torch.no_grad():
            for h, mlp in enumerate(ref.mlps):
                for lin, w, b in [(mlp.inp, inr.w_in, inr.b_in), *zip(mlp.hidden, inr.w_hid, inr.b_hid),
                                  (mlp.out, inr.w_out, inr.b_out)]:
                    lin.weight.copy_(w[h].T)
                    lin.bias.copy_(b[h])
                mlp.scales.copy_(inr.res_scale[:, h])
        return ref.to(inr.w_in.device)


class ReferenceTable:
    """Coordinates of `layers` at channel `sizes`, built by Python loops over channels.

    Rows come in the order of `coords.build_table` (tensor by tensor, out-major), so row r
    here is row r there; `rows[name]` holds each tensor's row indices, used to gather it.
    """

    def __init__(self, layers: Sequence[Layer], sizes: Mapping[str, int], norm_width: int, device):
        names = [n for spec in layers for n in spec.tensor_names()]
        raw, self.rows, self.shapes, self.kernels, self.fan_in = [], {}, {}, {}, {}
        for spec in layers:
            o, i = sizes[spec.out_group], sizes[spec.in_group]
            for kind in spec.tensors:
                name, eid, start = f"{spec.name}.{kind}", names.index(f"{spec.name}.{kind}"), len(raw)
                if kind == "weight":
                    for oc in range(o):
                        for ic in range(i):
                            raw.append([eid, oc, ic, len(names), o, i])
                    self.shapes[name], self.kernels[name], self.fan_in[name] = spec.weight_shape(sizes), max(spec.k, 1), i
                else:
                    for oc in range(o):
                        raw.append([eid, oc, 0, len(names), o, 1])
                    self.shapes[name], self.kernels[name], self.fan_in[name] = (o,), 1, 1
                self.rows[name] = torch.arange(start, len(raw), device=device)
        table = torch.tensor(raw, dtype=torch.float32, device=device)
        self.index, self.extent, self.norm_width = table[:, :3], table[:, 3:], norm_width
        self.layer_id = table[:, 0].long()


class ReferenceGenerator:
    """Per-width cached tables + the masked per-layer INR: the reference's weight generation."""

    def __init__(self, inr: ReferenceINR, layers: Sequence[Layer], norm_width: int, kernel: int):
        self.inr, self.layers, self.norm_width, self.kernel = inr, tuple(layers), norm_width, kernel
        self.tables: dict[tuple, ReferenceTable] = {}

    def table(self, sizes: Mapping[str, int]) -> ReferenceTable:
        key = tuple(sorted(sizes.items()))
        if key not in self.tables:
            device = next(self.inr.parameters()).device
            self.tables[key] = ReferenceTable(self.layers, sizes, self.norm_width, device)
        return self.tables[key]

    def generate(self, sizes: Mapping[str, int], noise: float = 0.0,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        t = self.table(sizes)
        index = t.index
        if noise > 0:  # exactly coords.normalise's draw, so both designs see the same noise
            device = generator.device if generator is not None else index.device
            u = torch.rand(index.shape, generator=generator, device=device).to(index.device) - 0.5
            u[:, 0] = 0.0
            u[:, 2] *= (t.extent[:, 2] > 1)
            index = index + noise * u
        x = torch.cat([index / t.extent, t.extent / self.norm_width], dim=1)
        out = self.inr(x, t.layer_id)
        K, centre = self.kernel, (self.kernel * self.kernel) // 2
        weights = {}
        for name, rows in t.rows.items():
            w, k = out[rows], t.kernels[name]
            if k != K:  # a smaller kernel takes the centre k×k of the K×K outputs
                lo = (K - k) // 2
                w = w.view(-1, K, K)[:, lo:lo + k, lo:lo + k] if k > 1 else w[:, centre]
            weights[name] = w.reshape(t.shapes[name]) / t.fan_in[name]
        return weights


class PlainNet(nn.Module):
    """A network of the family at fixed `sizes` with ordinary conv/linear modules (with bias):
    the reference keeps one alive per width and pushes generated weights into it."""

    def __init__(self, family, sizes: Mapping[str, int]):
        super().__init__()
        self.family = family
        self.layers = nn.ModuleDict()
        for spec in family.layers:
            o, i = sizes[spec.out_group], sizes[spec.in_group]
            mod = nn.Linear(i, o) if spec.is_linear else nn.Conv2d(i, o, spec.k, spec.stride, spec.k // 2)
            self.layers[spec.name.replace(".", "_")] = mod

    def tensors(self) -> dict[str, nn.Parameter]:
        return {f"{spec.name}.{kind}": getattr(self.layers[spec.name.replace('.', '_')], kind)
                for spec in self.family.layers for kind in ("weight", "bias")}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.family.forward(x, lambda spec, h: self.layers[spec.name.replace(".", "_")](h))
