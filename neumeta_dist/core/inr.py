"""The implicit neural representation: Fourier features → per-head residual MLPs.

Every generated tensor has its own head (a residual MLP, as in the full-network recipe);
heads are stored stacked — `(H, in, out)` per layer — so that one call generates all rows of
a coordinate table, whatever heads they belong to, and so that one head can be copied onto
another (the recipe's INR initialisation) by indexing.

Rows of a table are contiguous per head (`segments`), so each layer is a *segment matmul*:
row block s:e times its head's matrix. Two kernels compute it (`INR.matmul`):
- `loop`: each segment runs through its head's layers as plain addmm's on a contiguous
  slice (no masks, no scatter). The CPU default: a core is busy either way, 40-odd calls
  cost nothing there, and one segment's activations stay in cache.
- `grouped`: one `grouped_mm` per layer over all segments (CUTLASS grouped GEMM on Hopper,
  a C++ loop elsewhere). On a GPU the loop is launch-bound — each layer of a ResNet-20 INR
  would be 44 tiny GEMMs — so `auto` takes it on CUDA under bf16 autocast whenever the
  widths meet the kernel's 16-byte alignment. Numerics follow the loop's dtype flow under
  autocast exactly (bf16 GEMMs, fp32 residual stream), so the two differ only by rounding.
Everything `forward` needs about the segments (heads, offsets, per-row head) is built once
per segment list on the device (`SegmentPlan`): a step uploads nothing and reads nothing
back, so it never waits on the GPU.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..device import upload
from .cache import BytesCache
from .compilation import compile_over_widths

ACTIVATIONS = {"relu": F.relu, "elu": F.elu, "gelu": F.gelu, "silu": F.silu}


def fourier_features(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """[sin(2^k·π·x), cos(2^k·π·x)] for k < num_freqs, always in fp32.

    High bands of a coordinate with jittered channel indices are dominated by noise and
    lose all precision in bf16, hence fp32 — which autocast keeps without being switched off:
    it lowers GEMMs and convolutions, never a product, a sine or a concatenation.
    """
    freqs = (2.0 ** torch.arange(num_freqs, device=x.device, dtype=torch.float32)) * math.pi
    angles = x.float()[..., None] * freqs  # (N, D, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)


def split_rows(x: torch.Tensor, segments: Sequence[tuple[int, int, int]]) -> tuple[torch.Tensor, ...]:
    """x's row blocks, one per segment, by one `split`: its backward is one concatenation,
    where slicing `x[s:e]` per segment backpropagates a zero-filled full-size gradient per
    segment (measured: 2.5× the whole backward of a 44-segment ResNet-20 generation)."""
    if segments[0][1] != 0 or segments[-1][2] != len(x) or any(
            s != prev_end for (_, s, _), (_, _, prev_end) in zip(segments[1:], segments)):
        raise ValueError(f"segments must tile the {len(x)} rows in order: {list(segments)[:4]}...")
    return x.split([e - s for _, s, e in segments])


MATMULS = ("auto", "loop", "grouped")
PLAN_CACHE_BYTES = 2**28  # segment plans kept per INR, least recently used dropped (core/cache.py)


@dataclass(frozen=True)
class SegmentPlan:
    """A segment list as device tensors: built once per list, reused by every call."""

    heads: torch.Tensor  # (S,) int64: head of each segment
    offsets: torch.Tensor  # (S,) int32: end row of each segment (grouped_mm's `offs`)
    row_head: torch.Tensor  # (N,) int32: head of each row

    @classmethod
    def build(cls, segments: Sequence[tuple[int, int, int]], device) -> "SegmentPlan":
        """Two small uploads (pinned, asynchronous); the per-row heads are expanded on the
        device, their count given so that it need not be read back."""
        heads = upload(torch.tensor([h for h, _, _ in segments]), device)
        counts = upload(torch.tensor([e - s for _, s, e in segments]), device)
        rows = segments[-1][2] - segments[0][1]
        return cls(heads, torch.cumsum(counts, 0).to(torch.int32),
                   torch.repeat_interleave(heads, counts, output_size=rows).to(torch.int32))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.heads, self.offsets, self.row_head))


def grouped_segment_mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       plan: SegmentPlan) -> torch.Tensor:
    """Rows [s, e) of x times weight[h] + bias[h] per segment (h, s, e), as one grouped GEMM
    in x's dtype (the caller casts, as autocast would).

    The bias rides in the GEMM as one more input column of ones (padded to 8 columns for the
    kernel's 16-byte alignment): its gradient then falls out of the weight-gradient GEMM,
    where a per-row gather `bias[row_head]` would backpropagate as a scatter-add of every
    row onto a few dozen heads (tens of thousands of colliding adds per address).
    """
    w = weight.index_select(0, plan.heads)
    b = bias.index_select(0, plan.heads)[:, None, :]
    w = torch.cat([w, b, b.new_zeros(b.shape[0], 7, b.shape[2])], dim=1).to(x.dtype)
    unit = F.pad(x.new_ones(len(x), 1), (0, 7))
    with torch.autocast(x.device.type, enabled=False):  # dtypes are ours, whatever autocast's policy
        return F.grouped_mm(torch.cat([x, unit], dim=1), w, offs=plan.offsets)


def grouped_trunk(coords: torch.Tensor, plan: SegmentPlan, num_freqs: int, activation: str,
                  dtype: torch.dtype, w_in, b_in, w_hid, b_hid, res_scale, w_out, b_out) -> torch.Tensor:
    """Every layer of the INR with grouped GEMMs: (N, out_dim rounded up to 8) outputs.

    A pure function of tensors (no module state, no segment list) so that `torch.compile`
    with dynamic shapes traces it once for every width and fuses each layer's activation and
    residual into one pass over the rows. The per-row residual scale is an `embedding`
    lookup: its backward reduces duplicate indices by sorted segments, not colliding adds.
    The output layer's columns are zero-padded to a multiple of 8 (16-byte aligned strides).
    """
    act = ACTIVATIONS[activation]
    h = act(grouped_segment_mm(fourier_features(coords, num_freqs).to(dtype), w_in, b_in, plan))
    for layer, (w, b) in enumerate(zip(w_hid, b_hid)):
        scale = F.embedding(plan.row_head, res_scale[layer][:, None])
        h = h + scale * act(grouped_segment_mm(h.to(dtype), w, b, plan))
    pad = -w_out.shape[-1] % 8
    return grouped_segment_mm(h.to(dtype), F.pad(w_out, (0, pad)), F.pad(b_out, (0, pad)), plan)


class INR(nn.Module):
    def __init__(self, num_heads: int, out_dim: int, hidden: int = 256, layers: int = 4,
                 num_freqs: int = 16, activation: str = "relu", residual_scale: float = 0.1,
                 coord_dim: int = 6):
        super().__init__()
        self.num_freqs, self.out_dim, self.activation = num_freqs, out_dim, activation
        self.act = ACTIVATIONS[activation]
        in_dim = coord_dim * 2 * num_freqs
        self.w_in, self.b_in = _stacked(num_heads, in_dim, hidden)
        hid = [_stacked(num_heads, hidden, hidden) for _ in range(layers)]
        self.w_hid = nn.ParameterList([w for w, _ in hid])
        self.b_hid = nn.ParameterList([b for _, b in hid])
        self.res_scale = nn.Parameter(torch.full((layers, num_heads), residual_scale))
        self.residual_scale = residual_scale
        self.w_out, self.b_out = _stacked(num_heads, hidden, out_dim)
        self.matmul, self.compiled = "auto", None  # compiled: the torch.compile backend, if any
        self._plans: BytesCache[SegmentPlan] = BytesCache(PLAN_CACHE_BYTES, SegmentPlan.nbytes)

    @property
    def num_heads(self) -> int:
        return self.w_in.shape[0]

    def set_execution(self, matmul: str = "auto", compile: bool = False, backend: str = "inductor") -> "INR":
        """How `forward` computes (never what): the segment-matmul kernel, and whether the
        grouped trunk runs under `torch.compile` (with `backend`)."""
        if matmul not in MATMULS:
            raise ValueError(f"INR matmul {matmul!r} is not one of {', '.join(MATMULS)}")
        self.matmul, self.compiled = matmul, (backend if compile else None)
        return self

    def plan(self, segments: Sequence[tuple[int, int, int]], device) -> SegmentPlan:
        """The cached plan of a segment list (a continuous width range has hundreds of
        tables, a ResNet-18 plan is megabytes: core/cache.py)."""
        segments = tuple(segments)
        return self._plans.get((segments, str(device)), lambda: SegmentPlan.build(segments, device))

    def kernel(self, device: torch.device) -> str:
        """The segment-matmul kernel `forward` uses on `device` under the current autocast."""
        if self.matmul != "auto":
            return self.matmul
        if device.type != "cuda":  # (asked first: some devices have no autocast state to ask)
            return "loop"
        bf16 = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.bfloat16
        aligned = self.w_in.shape[1] % 8 == 0 and self.w_in.shape[2] % 8 == 0
        return "grouped" if bf16 and aligned else "loop"

    def forward(self, coords: torch.Tensor, segments: Sequence[tuple[int, int, int]],
                out_cols: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
        """Per-segment outputs; `out_cols[i]` restricts segment i to some output columns.

        A 1×1 conv or a bias needs one of the K·K outputs: computing only that column keeps
        a ResNet-50's many 1×1 convs from paying for 3×3 (or 7×7) kernels (the grouped
        kernel computes all columns and selects: one GEMM cannot vary its width by group).
        """
        cols = out_cols or [None] * len(segments)
        if self.kernel(coords.device) == "grouped":
            out = split_rows(self._grouped(coords, self.plan(segments, coords.device)), segments)
            return [o[:, :self.out_dim] if c is None else o[:, c] for o, c in zip(out, cols)]
        return self._per_segment(coords, segments, cols)

    def _per_segment(self, coords: torch.Tensor, segments: Sequence[tuple[int, int, int]],
                     cols: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        """Each segment through every layer of its head (segment-major), plain addmm's.

        The working set is one segment's activations, cache-sized on a CPU, where a
        layer-major pass streams every layer's full-table activations through memory
        (measured: 2× slower for a ResNet-20 table). Heads are taken with one `unbind` per
        stacked tensor, not by indexing per segment: the backward of `weight[h]` materialises
        a zero gradient of the *whole* stack per segment, unbind's is one stack. The residual
        scale is a 1-element tensor, not a 0-d one, so that under autocast it promotes the
        residual stream to fp32 exactly as the grouped kernel's per-row scale does.
        """
        w_in, b_in, w_out, b_out = (p.unbind(0) for p in (self.w_in, self.b_in, self.w_out, self.b_out))
        hidden = [(w.unbind(0), b.unbind(0)) for w, b in zip(self.w_hid, self.b_hid)]
        scales = self.res_scale.unbind(1)
        outs = []
        for (hd, _, _), x, c in zip(segments, split_rows(coords, segments), cols):
            h = self.act(torch.addmm(b_in[hd], fourier_features(x, self.num_freqs), w_in[hd]))
            for layer, (w, b) in enumerate(hidden):
                h = h + scales[hd][layer:layer + 1] * self.act(torch.addmm(b[hd], h, w[hd]))
            outs.append(_head_out(h, w_out[hd], b_out[hd], c))
        return outs

    def _grouped(self, coords: torch.Tensor, plan: SegmentPlan) -> torch.Tensor:
        device = coords.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else coords.dtype
        trunk = _compiled_trunk(self.compiled) if self.compiled else grouped_trunk
        return trunk(coords, plan, self.num_freqs, self.activation, dtype, self.w_in, self.b_in,
                     tuple(self.w_hid), tuple(self.b_hid), self.res_scale, self.w_out, self.b_out)

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


@functools.cache
def _compiled_trunk(backend: str):
    """`grouped_trunk` compiled (core/compilation.py: one graph serves every width), made on first
    use so that importing this module never loads the compiler."""
    return compile_over_widths(grouped_trunk, backend)


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
