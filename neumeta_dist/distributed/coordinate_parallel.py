"""How the INR call of a step is spread over ranks: replicated, or coordinate-parallel.

Replicated: every rank runs the INR on the whole coordinate table (the INR's cost is paid
once per rank). Coordinate-parallel: the table's rows are cut into `world` contiguous,
balanced ranges; each rank runs the INR on its range only, the outputs (the size of the
student network: small) are all-gathered, and in the backward their gradients are
reduce-scattered (summed) back, so each rank's INR receives the gradient of *every* rank's
loss through *its* rows.

Why this equals replicated data parallelism: with rank losses L_r and row ranges W_q,
rank q's INR gradient is Σ_r ∂L_r/∂W_q · ∂W_q/∂θ; DDP's mean over q gives
(1/R) Σ_r Σ_q ∂L_r/∂W_q · ∂W_q/∂θ = (1/R) Σ_r ∂L_r/∂θ — exactly the replicated DDP
gradient, and the single-process gradient of the mean loss on the concatenated global batch.
This needs every rank to generate the *same* network in a micro-batch (same width, same
coordinate noise: `train.step_rng` drops the rank in this mode), and every rank to call
`generate` together while the strategy is installed (training and validation do).

Collectives: an all-gather forward, a reduce-scatter backward (flat tensors) on a dedicated
process group (so they never interleave with DDP's bucket all-reduces). Ranges differ by at
most one row, so their outputs are padded to a common length. gloo implements both
collectives in the pinned torch (2.14, checked on 2 CPU processes), as NCCL does: no
all-reduce fallback is needed. Their names changed: `all_gather_single`/`reduce_scatter_single`
in the pinned torch, `all_gather_into_tensor`/`reduce_scatter_tensor` (deprecated since) in
the torch 2.11 of the GPU machines — whichever the running torch has.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from ..config import ConfigError

Segments = Sequence[tuple[int, int, int]]
Columns = Sequence[torch.Tensor | None]
# (inr, coords, segments, out_cols) -> per-segment outputs, as `INR.forward`
Generation = Callable[[torch.nn.Module, torch.Tensor, Segments, Columns], list[torch.Tensor]]

MODES = ("replicated", "coordinate_parallel")
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class Replicated:
    """The whole table on this rank."""

    def __call__(self, inr, coords: torch.Tensor, segments: Segments, cols: Columns) -> list[torch.Tensor]:
        return inr(coords, segments, cols)

    def __str__(self) -> str:
        return "replicated (every rank runs the INR on every row)"


replicated = Replicated()


def row_ranges(n: int, world: int) -> list[tuple[int, int]]:
    """`world` contiguous, non-empty ranges tiling [0, n), sizes differing by at most one."""
    if n < world:
        raise ValueError(f"coordinate-parallel generation: {n} rows cannot be cut into {world} non-empty "
                         f"ranges; use train.generation=replicated")
    return [(r * n // world, (r + 1) * n // world) for r in range(world)]


def slice_segments(segments: Segments, cols: Columns, lo: int, hi: int) -> tuple[list, list]:
    """The pieces of `segments` inside rows [lo, hi), re-based to start at 0, with their columns."""
    out, out_cols = [], []
    for (head, s, e), c in zip(segments, cols):
        s, e = max(s, lo), min(e, hi)
        if s < e:
            out.append((head, s - lo, e - lo))
            out_cols.append(c)
    return out, out_cols


def output_numel(segments: Segments, cols: Columns, out_dim: int) -> int:
    return sum((e - s) * (out_dim if c is None else len(c)) for (_, s, e), c in zip(segments, cols))


@dataclass
class CoordinateParallel:
    """Each rank generates rows `row_ranges(n, world)[rank]` of the table; see the module doc."""

    group: dist.ProcessGroup
    rank: int
    world: int
    checked: set = field(default_factory=set)  # the segment lists whose tables were compared

    def __str__(self) -> str:
        return f"coordinate-parallel (each of {self.world} ranks runs the INR on 1/{self.world} of the rows)"

    def __call__(self, inr, coords: torch.Tensor, segments: Segments, cols: Columns) -> list[torch.Tensor]:
        cols = list(cols) if cols else [None] * len(segments)
        self._check_same_table(coords, read=tuple(segments) not in self.checked)
        self.checked.add(tuple(segments))
        ranges = row_ranges(coords.shape[0], self.world)
        lo, hi = ranges[self.rank]
        local, local_cols = slice_segments(segments, cols, lo, hi)
        outs = inr(coords[lo:hi], local, local_cols)
        lengths = [output_numel(*slice_segments(segments, cols, a, b), inr.out_dim) for a, b in ranges]
        flat = _GatherFlat.apply(torch.cat([o.flatten() for o in outs]), lengths, self.rank, self.group)
        # The ranks' pieces concatenate to the row-major outputs of the whole table, in order.
        sizes = [(e - s, inr.out_dim if c is None else len(c)) for (_, s, e), c in zip(segments, cols)]
        return [piece.view(shape) for piece, shape in zip(flat.split([r * c for r, c in sizes]), sizes)]

    def _check_same_table(self, coords: torch.Tensor, read: bool) -> None:
        """Every rank must cut the same table: a width or noise that differs across ranks
        would otherwise hang the all-gather or silently mix networks. Every call gathers
        (row count, coordinate sum) from every rank — so that every rank calls the same
        collectives whatever it decides — but the result is read back (the host waits for
        the GPU) only where `read`, at the first table of each width: a width or noise drawn
        with the rank in its seed differs there already."""
        rows = torch.full((), float(coords.shape[0]), dtype=torch.float64, device=coords.device)
        mine = torch.stack([rows, coords.detach().double().sum()])
        every = mine.new_empty(self.world * 2)
        _all_gather(every, mine, group=self.group)
        every = every.view(self.world, 2)
        if read and not torch.allclose(every, every[:1].expand_as(every), rtol=1e-9, atol=0):
            raise ValueError(f"coordinate-parallel generation: ranks generate different tables (rows, coordinate "
                             f"sum per rank: {every.tolist()}); every rank must generate the same width and "
                             f"noise (train.step_rng does, from (seed, step, micro-batch))")


def generation_strategy(mode: str) -> Generation:
    """The strategy of `train.generation`; coordinate-parallel needs > 1 process, else it is
    replicated. Call it on every rank together: it creates a process group."""
    if mode not in MODES:
        raise ConfigError(f"train.generation={mode!r} is not allowed (allowed: {', '.join(MODES)})")
    if mode == "coordinate_parallel" and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        # Measured: ZeRO-3's parameter-fetch trace then differs between ranks and DeepSpeed
        # aborts the step; not supported until that is understood.
        raise ConfigError("train.generation=coordinate_parallel is not supported under DeepSpeed: launch DDP "
                          "(accelerate launch --multi_gpu) or set train.generation=replicated")
    if mode == "replicated" or not dist.is_initialized() or dist.get_world_size() == 1:
        return replicated
    return CoordinateParallel(dist.new_group(), dist.get_rank(), dist.get_world_size())


class _GatherFlat(torch.autograd.Function):
    """Forward: all ranks' flat pieces (lengths `lengths`) concatenated. Backward: the sum
    over ranks of the gradient of this rank's piece (a reduce-scatter)."""

    @staticmethod
    def forward(ctx, piece, lengths, rank, group):
        ctx.lengths, ctx.rank, ctx.group = lengths, rank, group
        width = max(lengths)
        gathered = piece.new_empty(len(lengths) * width)
        _all_gather(gathered, _pad(piece, width), group=group)
        return torch.cat([row[:n] for row, n in zip(gathered.view(-1, width), lengths)])

    @staticmethod
    def backward(ctx, grad):
        lengths, width = ctx.lengths, max(ctx.lengths)
        padded = torch.cat([_pad(g, width) for g in grad.split(lengths)])
        mine = grad.new_empty(width)
        _reduce_scatter(mine, padded, group=ctx.group)
        return mine[:lengths[ctx.rank]], None, None, None


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.pad(x.contiguous(), (0, n - x.numel()))
