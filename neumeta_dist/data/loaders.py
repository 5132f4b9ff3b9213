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
from torch.utils.data import TensorDataset

from ..config import Config, DataConfig
from ..device import upload
from . import sources
from .position import DataPosition
from .sources import DataError, Splits
from .stream import FaultCounts, RankStream, ShardList, StreamSpec, check_missing
from .stream import eval_batches as shard_eval_batches
from .stream import normalize, resolve_shards, stream_spec


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
    """The splits of `cfg`; `seed` (the training seed) shuffles the shard streams, never which
    images are held out (in memory: `data.split_seed`; shards: cut when written)."""
    if cfg.dataset != "shards":
        return sources.load_splits(cfg)
    parts = {}
    for key in ("shards", "val_shards", "test_shards", "final_shards"):
        if not getattr(cfg, key):
            continue
        shards = resolve_shards(getattr(cfg, key), cfg.root)
        check_missing(shards, cfg.max_bad_fraction, f"data.{key}={getattr(cfg, key)!r}")
        parts[key] = shards
    index = parts["shards"].index
    size = cfg.image_size or index["image_size"]
    if not size:
        raise DataError(f"data.image_size: the images of {cfg.shards!r} vary in size: set it (e.g. 224 for ImageNet)")
    train, val, test = (ShardSet(parts[k], cfg, seed, size) for k in ("shards", "val_shards", "test_shards"))
    final = ShardSet(parts["final_shards"], cfg, seed, size) if "final_shards" in parts else None
    return Splits(train, val, test, len(index["classes"]), index["channels"], size, index["name"], final)


class _Positioned:
    """What both kinds of training batches know of their place in the epochs: the `DataPosition`
    they started from, the batches handed out since, and the schedule's view of them."""

    def _start_at(self, start: DataPosition | int, n: int, per_epoch: int, world: int, batch: int) -> None:
        self.n, self.per_epoch, self.world, self.batch = n, per_epoch, world, batch
        self.start = start if isinstance(start, DataPosition) else DataPosition.from_batches(
            start, per_epoch, world, batch)
        self.taken = 0

    @property
    def position(self) -> DataPosition:
        """Where the batches handed out so far leave the epoch (the same on every rank)."""
        return self.start.advance(self.taken, self.n, self.world, self.batch)

    def batches_done(self) -> float:
        """The training done, in batches per rank of this world (fractional after a resize): what
        a schedule follows so that it continues across a change of world size."""
        pos = self.position
        return pos.epoch * self.per_epoch + pos.consumed / (self.world * self.batch)

    def batches_until(self, epoch: int) -> int:
        """Batches per rank from here to the start of `epoch` (0 when it is reached)."""
        pos = self.position
        if pos.epoch >= epoch:
            return 0
        return pos.rank_batches(self.n, self.world, self.batch) + (epoch - pos.epoch - 1) * self.per_epoch

    def __iter__(self):
        return self


class TensorBatches(_Positioned):
    """Endless batches of an in-memory dataset on this rank, from any `DataPosition`: the order
    of epoch e is a permutation seeded with `train.seed + e` (Accelerate's seedable sampler, so
    runs keep their batches), dealt over the ranks as position.py says.

    The dataset lives on the device (in-memory datasets are Fashion-MNIST/CIFAR-sized: a few
    hundred MB at most), uploaded once, and each epoch's permutation once: a batch is then a
    gather on the device, with no host work and no copy per step."""

    def __init__(self, cfg: Config, accelerator, data: TensorDataset, start: DataPosition | int):
        n, batch, world = len(data), cfg.data.batch_size, accelerator.num_processes
        if n // (world * batch) < 1:
            raise DataError(f"{n} training samples give no whole batch per rank (world {world} × batch "
                            f"{batch}): use more data or a smaller data.batch_size")
        self._start_at(start, n, n // (world * batch), world, batch)
        self.rank, self.device = accelerator.process_index, accelerator.device
        self.tensors = tuple(upload(t, self.device) for t in data.tensors)
        self.seed = cfg.train.seed
        self.it = self._batches()

    def order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def _batches(self):
        pos = self.start
        while True:
            order = upload(self.order(pos.epoch), self.device)
            for k in range(pos.rank_batches(self.n, self.world, self.batch)):
                lo = pos.batch_start(k, self.rank, self.world, self.batch)
                idx = order[lo:lo + self.batch]
                yield tuple(t[idx] for t in self.tensors)
            pos = DataPosition(pos.epoch + 1, 0)

    def __next__(self):
        self.taken += 1
        return next(self.it)

    def fault_scalars(self) -> dict[str, float]:
        return {}


class ShardBatches(_Positioned):
    """RankStream on the accelerator's device, with fault counts summed over ranks."""

    def __init__(self, cfg: Config, accelerator, data: ShardSet, start: DataPosition | int):
        self.spec = data.spec(True, cfg.data.batch_size, accelerator.process_index, accelerator.num_processes)
        self.device = accelerator.device
        self._start_at(start, self.spec.epoch_size(), self.spec.rank_batches(), self.spec.world, self.spec.batch_size)
        self.stream = RankStream(self.spec, self.start, sum(s.count for s in data.shards.missing),
                                 pin_memory=self.device.type == "cuda")

    def __next__(self):
        x, y = next(self.stream)
        self.taken += 1
        return normalize(x.to(self.device, non_blocking=True), self.spec), y.to(self.device, non_blocking=True)

    def fault_scalars(self) -> dict[str, float]:
        """Collective: call on every rank at the same step (as the loops do at log steps)."""
        counts = self.stream.fault_counts().tensor().to(self.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # the process group itself: Accelerate's reduce is a no-op when it runs CPU ranks
            # without `cpu=True` (distributed_type NO, yet world size > 1)
            torch.distributed.all_reduce(counts)
        return FaultCounts(*map(int, counts.cpu())).scalars(missing=self.stream.missing)


def train_batches(cfg: Config, accelerator, data, start: DataPosition | int = 0) -> TensorBatches | ShardBatches:
    """Endless training batches (x, y) on this rank from `start` (a position, or a number of
    batches per rank of this world size); `.per_epoch` batches make a whole epoch, `.position`
    is where the batches handed out leave it (`.batches_done()` in batches per rank,
    `.batches_until(e)` to epoch e), `.fault_scalars()` counts unreadable data."""
    kind = ShardBatches if isinstance(data, ShardSet) else TensorBatches
    return kind(cfg, accelerator, data, start)


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
    for i in range(lo, hi, batch_size):  # pinned, asynchronous copies: the host never waits for the GPU
        yield upload(x[i:min(i + batch_size, hi)], device), upload(y[i:min(i + batch_size, hi)], device)


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
