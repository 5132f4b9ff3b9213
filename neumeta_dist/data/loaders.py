"""The one seam between the training loops and the data, for both kinds of dataset.

`load_splits` gives `Splits` whose parts are in-memory `TensorDataset`s (sources.py) or
`ShardSet`s (WebDataset shards, stream.py); the loops never look at which:
`train_batches` (endless, resumable training batches on this rank, with fault counts),
`eval_batches` (this rank's share of every sample once) and `sample_images` (a fixed batch of
images, e.g. for smoothing checks and BN recalibration).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import torch
from torch.utils.data import DataLoader, TensorDataset

from ..config import Config, DataConfig
from . import sources
from .sources import DataError, Splits
from .stream import FaultCounts, RankStream, ShardList, StreamSpec, check_missing, normalize
from .stream import eval_batches as shard_eval_batches
from .stream import resolve_shards, stream_spec


@dataclass(frozen=True)
class ShardSet:
    """One split as shards: what `len` and the loaders need, without opening a tar."""

    shards: ShardList
    cfg: DataConfig
    seed: int
    image_size: int

    def __len__(self) -> int:
        return self.shards.count

    def spec(self, train: bool, batch_size: int, rank: int = 0, world: int = 1) -> StreamSpec:
        return stream_spec(self.shards, self.cfg, self.seed, train, batch_size, rank, world, self.image_size)


def load_splits(cfg: DataConfig, seed: int = 0) -> Splits:
    if cfg.dataset != "shards":
        return sources.load_splits(cfg, seed)
    parts = {}
    for key in ("shards", "val_shards", "test_shards"):
        shards = resolve_shards(getattr(cfg, key), cfg.root)
        check_missing(shards, cfg.max_bad_fraction, f"data.{key}={getattr(cfg, key)!r}")
        parts[key] = shards
    index = parts["shards"].index
    size = cfg.image_size or index["image_size"]
    if not size:
        raise DataError(f"data.image_size: the images of {cfg.shards!r} vary in size: set it (e.g. 224 for ImageNet)")
    train, val, test = (ShardSet(parts[k], cfg, seed, size) for k in ("shards", "val_shards", "test_shards"))
    return Splits(train, val, test, len(index["classes"]), index["channels"], size, index["name"])


class TensorBatches:
    """Endless batches of an in-memory dataset from a seedable sampler: the order is a function
    of (seed, epoch), so resuming only skips the batches already consumed."""

    def __init__(self, cfg: Config, accelerator, data: TensorDataset, start: int):
        loader = DataLoader(data, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.data.num_workers)
        self.loader, self.accelerator = accelerator.prepare(loader), accelerator
        self.per_epoch = len(self.loader)
        self.it = self._batches(start)

    def _batches(self, start: int):
        epoch, skip = divmod(start, self.per_epoch)
        while True:
            self.loader.set_epoch(epoch)
            yield from (self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader)
            epoch, skip = epoch + 1, 0

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.it)

    def fault_scalars(self) -> dict[str, float]:
        return {}


class ShardBatches:
    """RankStream on the accelerator's device, with fault counts summed over ranks."""

    def __init__(self, cfg: Config, accelerator, data: ShardSet, start: int):
        self.spec = data.spec(True, cfg.data.batch_size, accelerator.process_index, accelerator.num_processes)
        self.device = accelerator.device
        self.stream = RankStream(self.spec, start, sum(s.count for s in data.shards.missing),
                                 pin_memory=self.device.type == "cuda")
        self.per_epoch = self.stream.per_epoch

    def __iter__(self):
        return self

    def __next__(self):
        x, y = next(self.stream)
        return normalize(x.to(self.device, non_blocking=True), self.spec), y.to(self.device, non_blocking=True)

    def fault_scalars(self) -> dict[str, float]:
        """Collective: call on every rank at the same step (as the loops do at log steps)."""
        counts = self.stream.fault_counts().tensor().to(self.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # the process group itself: Accelerate's reduce is a no-op when it runs CPU ranks
            # without `cpu=True` (distributed_type NO, yet world size > 1)
            torch.distributed.all_reduce(counts)
        return FaultCounts(*map(int, counts.cpu())).scalars(missing=self.stream.missing)


def train_batches(cfg: Config, accelerator, data, start_micro: int = 0) -> TensorBatches | ShardBatches:
    """Endless training batches (x, y) on this rank, `start_micro` batches into the seeded order;
    `.per_epoch` batches make an epoch, `.fault_scalars()` counts unreadable data."""
    kind = ShardBatches if isinstance(data, ShardSet) else TensorBatches
    return kind(cfg, accelerator, data, start_micro)


def eval_batches(data, batch_size: int, accelerator=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of every sample, once: contiguous slices, or the shards' exact split."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else torch.device("cpu")
    if isinstance(data, ShardSet):
        spec = data.spec(False, batch_size, rank, world)
        for xb, yb in shard_eval_batches(spec, pin_memory=device.type == "cuda"):
            yield normalize(xb.to(device, non_blocking=True), spec), yb.to(device, non_blocking=True)
        return
    x, y = data.tensors
    lo, hi = rank * len(x) // world, (rank + 1) * len(x) // world
    for i in range(lo, hi, batch_size):
        yield x[i:min(i + batch_size, hi)].to(device), y[i:min(i + batch_size, hi)].to(device)


def sample_images(data, n: int) -> torch.Tensor:
    """The first `n` images of a split, evaluation-transformed (the same on every rank)."""
    if not isinstance(data, ShardSet):
        return data.tensors[0][:n]
    spec = replace(data.spec(False, min(n, 256)), workers=0)
    out, have = [], 0
    for x, _ in shard_eval_batches(spec):
        out.append(normalize(x, spec))
        have += len(x)
        if have >= n:
            break
    return torch.cat(out)[:n]
