"""Coordinate tables: one row per generated element, built with tensor ops and cached per width.

Every generated tensor (a layer's weight, and separately its bias) is one *entry* with its
own INR head. A weight row addresses one (out, in) channel pair and carries a whole k×k
kernel in the INR's K×K output (K = largest kernel generated; smaller kernels take the
centre); a bias row addresses one output channel.

Raw row fields: (entry, out_idx, in_idx, n_entries, out_size, in_size). `normalise` turns
them into the INR input: the first three divided by the last three (a channel becomes a
position in [0, 1) of the *current* width) and the sizes divided by a normalising width.
*Nested* tables (`meta.channel_coords=nested`) divide the channel indices by the *full*
width instead: channel c is at c/C at every width, so a narrower network is the leading
channels of a wider one (as in slimmable networks) while the size fields still tell the INR
which width it generates — a held-out width then asks for no new channel position, only a
new size.
Coordinate noise is added to the channel indices only: noise on the entry field would route
rows to the wrong head (a defect of the reference code).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..device import upload
from ..models.family import Layer


@dataclass(frozen=True)
class Entry:
    """One generated tensor: rows [start, end) of the table, produced by INR head `head`."""

    name: str  # "<layer>.weight" or "<layer>.bias"
    head: int
    start: int
    end: int
    shape: tuple[int, ...]
    kernel: int  # k of the conv; 1 for linear layers and biases
    fan_in: int  # input channels (weights are divided by it); 1 for biases


@dataclass
class CoordTable:
    index: torch.Tensor  # (N, 3) float32: entry, out_idx, in_idx
    extent: torch.Tensor  # (N, 3) float32: n_entries, out_size, in_size
    entries: tuple[Entry, ...]
    norm_width: int
    divisor: torch.Tensor | None = None  # (N, 3) what `index` is divided by (None: extent)

    @property
    def segments(self) -> list[tuple[int, int, int]]:
        return [(e.head, e.start, e.end) for e in self.entries]

    def __len__(self) -> int:
        return self.index.shape[0]

    def to(self, device) -> "CoordTable":
        divisor = None if self.divisor is None else upload(self.divisor, device)
        return CoordTable(upload(self.index, device), upload(self.extent, device), self.entries, self.norm_width,
                          divisor)


def build_table(layers: Sequence[Layer], sizes: Mapping[str, int], norm_width: int,
                heads: Mapping[str, int] | None = None, entry_ids: Mapping[str, int] | None = None,
                n_entries: int | None = None, full_sizes: Mapping[str, int] | None = None,
                device: torch.device | str = "cpu") -> CoordTable:
    """Table for `layers` at channel `sizes`, built on `device`.

    `entry_ids`/`n_entries` fix each tensor's entry coordinate against the *whole* plan
    (default: position in `layers`), so a head sees the same entry coordinate in every stage
    however many tensors are active. `heads` maps tensor name → head (default: its entry).
    `full_sizes` makes the table nested: channel indices are positions of the full width.
    Every tensor is made on `device` from Python numbers (ranges and fills): a GPU builds a
    table in a few kernels per layer, with no host-side rows and no copy.
    """
    names = [n for spec in layers for n in spec.tensor_names()]
    entry_ids = entry_ids if entry_ids is not None else {n: i for i, n in enumerate(names)}
    n_entries = n_entries if n_entries is not None else len(names)
    index, extent, divisor, entries, start = [], [], [], [], 0
    for spec in layers:
        o, i = sizes[spec.out_group], sizes[spec.in_group]
        for kind in spec.tensors:
            if kind == "weight":
                out_idx, in_idx = torch.meshgrid(torch.arange(o, device=device), torch.arange(i, device=device),
                                                 indexing="ij")
                shape, kernel, fan_in = spec.weight_shape(sizes), max(spec.k, 1), i
            else:  # one row per output channel: a bias, or a GroupNorm scale
                out_idx, in_idx = torch.arange(o, device=device), torch.zeros(o, dtype=torch.long, device=device)
                shape, kernel, fan_in = (o,), 1, 1
            name = f"{spec.name}.{kind}"
            n, eid = out_idx.numel(), entry_ids[name]
            eids = torch.full((n,), float(eid), device=device)
            index.append(torch.stack([eids, out_idx.flatten().float(), in_idx.flatten().float()], 1))
            extent.append(_rows((n_entries, o, fan_in), n, device))
            if full_sizes is not None:
                full_in = full_sizes[spec.in_group] if kind == "weight" else 1
                divisor.append(_rows((n_entries, full_sizes[spec.out_group], full_in), n, device))
            head = heads[name] if heads is not None else eid
            entries.append(Entry(name, head, start, start + n, tuple(shape), kernel, fan_in))
            start += n
    return CoordTable(torch.cat(index), torch.cat(extent), tuple(entries), norm_width,
                      torch.cat(divisor) if divisor else None)


def _rows(values: Sequence[float], n: int, device) -> torch.Tensor:
    """`n` equal rows `values` (float32) made on `device` by fills, not copied from the host."""
    return torch.stack([torch.full((1,), float(v), device=device) for v in values], 1).expand(n, len(values))


def normalise(table: CoordTable, noise: float = 0.0, generator: torch.Generator | None = None,
              size_noise: float = 0.0) -> torch.Tensor:
    """INR input (N, 6); `noise` jitters the channel indices by U(−noise/2, noise/2).

    `size_noise` scales every size field by one factor 1 + U(−size_noise/2, size_noise/2) per
    call (one network, one jittered width): trained on a few widths, the INR still sees the
    size input move continuously between them, which is what a held-out width asks of it.
    Drawn after the channel noise, so size_noise = 0 leaves every other draw as it was.

    A bias row's in-size is 1, so its jittered in-position would be pure noise: bias rows
    keep their in-index (the `extent[:, 2] > 1` mask).

    The noise is drawn on the generator's device and moved without waiting: a step seeded
    by a CPU generator draws the same numbers on any device and never syncs the GPU.
    """
    index, extent = table.index, table.extent
    if (noise > 0 or size_noise > 0) and generator is not None and generator.device != index.device:
        # Same seed, generator on the table's device: no host-side draw and no copy
        # of a table-sized noise tensor per step (the draw differs between devices).
        generator = torch.Generator(device=index.device).manual_seed(generator.initial_seed())
    if noise > 0:
        u = torch.rand(index.shape, generator=generator, device=index.device) - 0.5
        u[:, 0] = 0.0
        u[:, 2] *= (table.extent[:, 2] > 1)
        index = index + noise * u
    if size_noise > 0:
        factor = 1 + size_noise * (torch.rand((), generator=generator, device=index.device) - 0.5)
        extent = torch.cat([extent[:, :1], extent[:, 1:] * factor], dim=1)
    divisor = table.extent if table.divisor is None else table.divisor
    return torch.cat([index / divisor, extent / table.norm_width], dim=1)


def centre_columns(table: CoordTable, out_kernel: int, device: torch.device | str = "cpu") -> list[torch.Tensor | None]:
    """Which of the K·K INR outputs each entry uses (None: all of them), on `device`."""
    K = out_kernel
    grid = torch.arange(K * K, device=device).view(K, K)
    cols = []
    for e in table.entries:
        lo = (K - e.kernel) // 2
        cols.append(None if e.kernel == K else grid[lo:lo + e.kernel, lo:lo + e.kernel].flatten())
    return cols


def split_output(outs: list[torch.Tensor], table: CoordTable) -> dict[str, torch.Tensor]:
    """Per-entry INR outputs → tensors of their shapes, weights divided by their fan-in."""
    return {e.name: o.reshape(e.shape) / e.fan_in for e, o in zip(table.entries, outs)}
