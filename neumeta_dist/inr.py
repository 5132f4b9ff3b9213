"""The implicit neural representation: Fourier features → per-head residual MLPs.

Every generated tensor has its own head (a residual MLP, as in the full-network recipe);
heads are stored stacked — `(H, in, out)` per layer — so that one call generates all rows of
a coordinate table, whatever heads they belong to, and so that one head can be copied onto
another (the recipe's INR initialisation) by indexing.

Rows of a table are contiguous per head (`segments`), so each layer is a *segment matmul*:
row block s:e times its head's matrix. On CPU that is a short loop of plain matmuls over
contiguous slices (no masks, no scatter); a grouped-GEMM kernel can replace `segment_mm`
without touching anything else.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"relu": F.relu, "elu": F.elu, "gelu": F.gelu, "silu": F.silu}


def fourier_features(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """[sin(2^k·π·x), cos(2^k·π·x)] for k < num_freqs, always in fp32.

    High bands of a coordinate with jittered channel indices are dominated by noise and
    lose all precision in bf16, hence the fp32 island.
    """
    freqs = (2.0 ** torch.arange(num_freqs, device=x.device, dtype=torch.float32)) * math.pi
    with torch.autocast(x.device.type, enabled=False):
        angles = x.float()[..., None] * freqs  # (N, D, F)
        return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)


def segment_mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               segments: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """Rows [s, e) of x times weight[h] + bias[h] for each (h, s, e); segments tile x in order.

    Heads are taken with one `unbind` per stacked tensor, not by indexing per segment: the
    backward of `weight[h]` materialises a zero gradient of the *whole* stack for every
    segment (measured: it dominated a 24-head warm-up step), unbind's is one stack.
    """
    ws, bs = weight.unbind(0), bias.unbind(0)
    return torch.cat([torch.addmm(bs[h], xs, ws[h]) for (h, _, _), xs in zip(segments, _rows(x, segments))])


def _rows(x: torch.Tensor, segments: Sequence[tuple[int, int, int]]) -> tuple[torch.Tensor, ...]:
    """x's row blocks of `segments`, by one `split`: the backward of a slice `x[s:e]` writes a
    zero gradient of the whole x, so slicing per segment costs segments × rows (measured: 60 %
    of a ResNet-20 generation step; with rows split across ranks it made coordinate-parallel
    generation look super-linear); split's backward is one concatenation."""
    return x.split([e - s for _, s, e in segments])


class INR(nn.Module):
    def __init__(self, num_heads: int, out_dim: int, hidden: int = 256, layers: int = 4,
                 num_freqs: int = 16, activation: str = "relu", residual_scale: float = 0.1,
                 coord_dim: int = 6):
        super().__init__()
        self.num_freqs, self.out_dim = num_freqs, out_dim
        self.act = ACTIVATIONS[activation]
        in_dim = coord_dim * 2 * num_freqs
        self.w_in, self.b_in = _stacked(num_heads, in_dim, hidden)
        hid = [_stacked(num_heads, hidden, hidden) for _ in range(layers)]
        self.w_hid = nn.ParameterList([w for w, _ in hid])
        self.b_hid = nn.ParameterList([b for _, b in hid])
        self.res_scale = nn.Parameter(torch.full((layers, num_heads), residual_scale))
        self.residual_scale = residual_scale
        self.w_out, self.b_out = _stacked(num_heads, hidden, out_dim)

    @property
    def num_heads(self) -> int:
        return self.w_in.shape[0]

    def forward(self, coords: torch.Tensor, segments: Sequence[tuple[int, int, int]],
                out_cols: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
        """Per-segment outputs; `out_cols[i]` restricts segment i to some output columns.

        A 1×1 conv or a bias needs one of the K·K outputs: computing only that column keeps
        a ResNet-50's many 1×1 convs from paying for 3×3 (or 7×7) kernels.
        """
        row_head = torch.repeat_interleave(
            torch.tensor([hd for hd, _, _ in segments], device=coords.device),
            torch.tensor([e - s for _, s, e in segments], device=coords.device))
        h = self.act(segment_mm(fourier_features(coords, self.num_freqs), self.w_in, self.b_in, segments))
        for layer, (w, b) in enumerate(zip(self.w_hid, self.b_hid)):
            scale = self.res_scale[layer, row_head][:, None]
            h = h + scale * self.act(segment_mm(h, w, b, segments))
        cols = out_cols or [None] * len(segments)
        w_out, b_out = self.w_out.unbind(0), self.b_out.unbind(0)
        return [_head_out(hs, w_out[hd], b_out[hd], c) for (hd, _, _), hs, c in zip(segments, _rows(h, segments), cols)]

    def subset(self, heads: Sequence[int]) -> "INR":
        """A new INR holding copies of `heads` only (head i of it = heads[i] of this one)."""
        sub = copy.deepcopy(self)
        idx = torch.tensor(list(heads), device=self.w_in.device)
        with torch.no_grad():
            for p_sub, p in zip(sub.parameters(), self.parameters()):
                axis = 1 if p is self.res_scale else 0
                p_sub.data = p.index_select(axis, idx).clone()
        return sub

    @torch.no_grad()
    def load_subset(self, sub: "INR", heads: Sequence[int]) -> None:
        """Write a `subset(heads)` back into its heads."""
        idx = torch.tensor(list(heads), device=self.w_in.device)
        for p, p_sub in zip(self.parameters(), sub.parameters()):
            p.index_copy_(1 if p is self.res_scale else 0, idx, p_sub)

    @torch.no_grad()
    def copy_head(self, src: int, dst: int) -> None:
        """Initialise head `dst` as a copy of head `src` (the recipe's INR initialisation)."""
        for p in self.parameters():
            axis = 1 if p is self.res_scale else 0
            p.index_copy_(axis, torch.tensor([dst], device=p.device), p.index_select(axis, torch.tensor([src], device=p.device)))

    @torch.no_grad()
    def reset_head(self, head: int, generator: torch.Generator | None = None) -> None:
        """Random re-initialisation of one head (same law as at construction)."""
        for w, b in [(self.w_in, self.b_in), *zip(self.w_hid, self.b_hid), (self.w_out, self.b_out)]:
            # Drawn on the CPU (where the seeded generator lives), so every device and rank
            # gets the same head.
            w_h, b_h = torch.empty(w.shape[1:]), torch.empty(b.shape[1:])
            _init_(w_h, b_h, generator)
            w[head].copy_(w_h)
            b[head].copy_(b_h)
        self.res_scale[:, head] = self.residual_scale


def _head_out(x, w, b, cols):
    if cols is not None:
        w, b = w[:, cols], b[cols]
    return torch.addmm(b, x, w)


def _stacked(heads: int, fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
    w, b = torch.empty(heads, fan_in, fan_out), torch.empty(heads, fan_out)
    for h in range(heads):
        _init_(w[h], b[h])
    return nn.Parameter(w), nn.Parameter(b)


def _init_(w: torch.Tensor, b: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """nn.Linear's default law: U(±1/√fan_in) for weight and bias."""
    bound = 1.0 / math.sqrt(w.shape[0])
    w.uniform_(-bound, bound, generator=generator)
    b.uniform_(-bound, bound, generator=generator)
