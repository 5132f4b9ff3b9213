"""The WebDataset training pipeline: exact or resampled epochs, fixed batches per rank, faults counted.

Shards are named by a brace pattern (`/data/in/train-{000000..000146}.tar`), a list file
(`shards.txt`, one path per line) or an index (`index.json#train`, as `neumeta-dist shards`
writes it); their sample counts come from the `index.json` beside them (or one scan of a tar
that no index lists).

**Splitting (exact mode).** WebDataset's `split_by_node`/`split_by_worker` deal whole shards
to ranks and workers, so a rank's share is as uneven as the shards, and ranks that run out
first wait in the next collective (or the run must cut every rank to the shortest one). Here
the epoch is a sequence of sample *positions*: the shards in a seeded per-epoch order, each
shard's samples in file order. Every rank gets the same number of whole batches — a contiguous
run of positions — and inside a rank each DataLoader worker a contiguous run of whole batches,
so shards are still read front to back by one worker (a worker skips, without decoding, the
leading samples of a shard that its neighbour started). Training drops the last
`N mod (world × batch)` positions of each epoch, a different set each epoch (shard order
changes); evaluation spreads all N positions over the ranks, so every sample is scored once.

**Resampled mode** is OpenCLIP's: each worker draws shards with replacement from its own
seeded stream, and `data.batches_per_rank` fixes the epoch length, so no rank ever waits.

**Order and resume.** Every random choice is a function of (seed, epoch, rank, worker[, batch]):
shard order, the shuffle buffer, crops and flips. The DataLoader takes batches from its
workers round-robin, so batch i of a rank comes from worker i mod workers; resuming at batch k
of an epoch makes each worker replay its stream without decoding the batches that were already
consumed (and rotates worker ids, as the DataLoader restarts its round-robin at worker 0).
Resume granularity is therefore one batch: bitwise the same batches as an uninterrupted run,
for the same world size, workers and batch size (the last two part of the config digest a
checkpoint is tied to), unless a batch before the resume point was lost entirely (then its
padding differs).

**Another world size, mid-epoch.** What an epoch consumed is recorded as its legs, (world
size, batches per rank) in order (data/position.py). The shuffle buffers consume a *set* of
positions, not a prefix, but one that is a function of (seed, epoch, world, workers, batch,
batches): `untrained` recomputes it by dealing each leg's positions as the stream dealt them
and running each worker's buffer on positions alone, with the RNG the stream used
(`buffered`, one code path for both), without reading a shard — 0.4 s for half an
ImageNet-sized epoch on 8 ranks × 8 workers. The positions left, in plan order, are dealt to
the new world as an epoch is (each rank a contiguous run of whole batches, each worker a
contiguous run of those), read by workers that skip the consumed ones without decoding; the
next epochs are whole. So the epoch trains each sample at most once and leaves out fewer than
one global batch of the world that finishes it; a world that wrote the last leg continues it
batch for batch. For the replay to hold, the buffer must see every position: the reader hands
it a placeholder for each lost sample. A resampled epoch has no order to carry: the new world
draws the rest of the epoch's draws from fresh streams (seeded with the leg, so they are not
the old ranks' draws again).

**Faults.** A missing shard is found when the shard list is resolved (every rank sees the same
files) and left out of the plan; the samples of a truncated tar after its last whole one are lost, and a
sample that does not decode is dropped: either way its batch comes out short. Each is logged with the shard and key,
counted (`FaultCounts`, passed along with each batch so the training loop can log them to
TensorBoard), and checked against `data.max_bad_fraction` — of the whole dataset for missing
shards, of each worker's share for the rest (so the total is within it too, without
talking across processes). Over budget is a `DataError` naming the file and the fix. A batch
whose every sample was lost is replaced by a repeat of the worker's previous batch (counted as
padded), so every worker yields exactly its planned number of batches: no rank waits forever.
"""
from __future__ import annotations

import bisect
import functools
import io
import itertools
import logging
import math
import multiprocessing as mp
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..config import DataConfig
from ..device import upload
from .position import DataPosition
from .shards import INDEX, TruncatedShard, read_index, read_samples
from .sources import DataError

log = logging.getLogger("neumeta_dist.data")


# ---------------------------------------------------------------- shard lists


@dataclass(frozen=True)
class Shard:
    path: str
    count: int


@dataclass(frozen=True)
class ShardList:
    """Resolved shards (present ones only) + what was missing when they were listed."""

    shards: tuple[Shard, ...]
    missing: tuple[Shard, ...]
    index: dict  # the index.json found beside the shards (classes, channels, statistics)

    @property
    def count(self) -> int:
        return sum(s.count for s in self.shards)


def resolve_shards(spec: str, root: str = "") -> ShardList:
    """`index.json#split`, a `.txt` list file, or a brace pattern → shards with sample counts."""
    base = Path(root) if root else Path(".")
    path_part, _, split = spec.partition("#")
    path = Path(path_part) if Path(path_part).is_absolute() else base / path_part
    if path.suffix == ".json":
        index = read_index(path)
        if split not in index["splits"]:
            raise DataError(f"{path} has no split {split!r} (it has {', '.join(index['splits'])}): "
                            f"name one as {path}#<split>")
        paths = [path.parent / s["name"] for s in index["splits"][split]["shards"]]
    elif path.suffix == ".txt":
        if not path.is_file():
            raise DataError(f"shard list {path} not found")
        lines = [l.strip() for l in path.read_text().splitlines()]
        paths = [Path(l) if Path(l).is_absolute() else path.parent / l for l in lines if l and not l.startswith("#")]
    else:
        from braceexpand import braceexpand
        paths = [Path(p) for p in braceexpand(str(path))]
    if not paths:
        raise DataError(f"shard spec {spec!r} names no shards")
    return _with_counts(paths, spec)


def _with_counts(paths: list[Path], spec: str) -> ShardList:
    indexes: dict[Path, dict] = {}

    def index_of(folder: Path) -> dict | None:
        if folder not in indexes:
            indexes[folder] = read_index(folder / INDEX) if (folder / INDEX).is_file() else None
        return indexes[folder]

    present, missing = [], []
    for p in paths:
        idx = index_of(p.parent)
        known = {s["name"]: s["count"] for sp in idx["splits"].values() for s in sp["shards"]} if idx else {}
        if not p.is_file():
            if p.name not in known:
                raise DataError(f"shard {p} is missing and no index.json beside it says how many samples it "
                                f"held: restore it or drop it from {spec!r}")
            missing.append(Shard(str(p), known[p.name]))
        else:
            present.append(Shard(str(p), known[p.name] if p.name in known else _scan_count(p)))
    index = next((i for i in indexes.values() if i), None)
    if index is None:
        raise DataError(f"no index.json beside the shards of {spec!r}: write them with `neumeta-dist shards` "
                        "(the index holds the classes and normalisation statistics)")
    return ShardList(tuple(present), tuple(missing), index)


def _scan_count(path: Path) -> int:
    try:
        return sum(1 for _ in read_samples(path))
    except TruncatedShard as e:
        return e.samples


# ---------------------------------------------------------------- fault accounting


@dataclass
class FaultCounts:
    """Samples that did not reach a batch, and batches repeated to keep the batch count."""

    corrupt: int = 0  # images (or labels) that did not decode
    lost: int = 0  # samples behind the end of a truncated tar, or in a shard that vanished
    padded: int = 0  # batches repeated because every sample in them was lost

    def tensor(self) -> torch.Tensor:
        return torch.tensor([self.corrupt, self.lost, self.padded], dtype=torch.long)

    def scalars(self, missing: int = 0) -> dict[str, float]:
        return {"data/corrupt_samples": float(self.corrupt), "data/lost_samples": float(self.lost + missing),
                "data/padded_batches": float(self.padded)}


# ---------------------------------------------------------------- what one worker reads


@dataclass(frozen=True)
class StreamSpec:
    """Everything a worker needs (picklable): shards, geometry, transforms, budget."""

    shards: tuple[Shard, ...]
    train: bool  # augment + shuffle + drop the epoch's remainder; else eval transform, every sample
    batch_size: int
    rank: int = 0
    world: int = 1
    workers: int = 0
    resampled: bool = False
    batches_per_rank: int = 0  # resampled mode
    seed: int = 0
    shuffle_buffer: int = 1000
    decode: str = "pil"
    image_size: int = 32
    channels: int = 3
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    min_crop_scale: float = 0.08
    eval_crop: float = 0.875
    max_bad_fraction: float = 0.0

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)

    def rank_batches(self) -> int:
        """Batches per rank per epoch (training; the same on every rank)."""
        return self.batches_per_rank if self.resampled else self.total // (self.world * self.batch_size)

    def epoch_size(self) -> int:
        """Positions of a training epoch: the samples (exact), or the draws of its fixed batches (resampled)."""
        return self.batches_per_rank * self.world * self.batch_size if self.resampled else self.total


def consumed_by_worker(start_batch: int, workers: int, worker: int) -> int:
    """How many of `worker`'s batches the first `start_batch` batches of a rank include."""
    w = max(workers, 1)
    return start_batch // w + (worker < start_batch % w)


def rank_share(rest: Sequence[int], world: int, rank: int, batch: int) -> Sequence[int]:
    """`rank`'s contiguous run of whole batches of `rest` (the epoch's untrained positions, in plan order)."""
    per_rank = len(rest) // (world * batch) * batch
    return rest[rank * per_rank:(rank + 1) * per_rank]


def worker_share(share: Sequence[int], workers: int, worker: int, batch: int) -> Sequence[int]:
    """`worker`'s contiguous run of a rank's `share`: its round-robin count of the rank's batches."""
    n, w = len(share) // batch, max(workers, 1)
    lo = sum(n // w + (i < n % w) for i in range(worker)) * batch
    return share[lo:lo + (n // w + (worker < n % w)) * batch]


def eval_positions(spec: StreamSpec, worker: int) -> range:
    """The positions this rank's `worker` scores: every sample once over ranks × workers."""
    w, n = max(spec.workers, 1), spec.total
    rlo, rhi = spec.rank * n // spec.world, (spec.rank + 1) * n // spec.world
    return range(rlo + worker * (rhi - rlo) // w, rlo + (worker + 1) * (rhi - rlo) // w)


def buffered(items: Iterator, spec: StreamSpec, epoch: int, rank: int, worker: int) -> Iterator:
    """The order a worker trains its items in, through its seeded shuffle buffer. The stream
    passes its samples (one item per position, lost ones too), `untrained` their positions:
    one RNG driven alike, so the replay knows what the stream consumed."""
    return shuffled(items, spec.shuffle_buffer, random.Random(f"{spec.seed}/{epoch}/{rank}/{worker}/buffer"))


def untrained(spec: StreamSpec, epoch: int, legs: tuple[tuple[int, int], ...]) -> Sequence[int]:
    """The positions of `epoch`, in plan order, that the `legs` (world, batches per rank, in
    order) left untrained: each leg dealt what the ones before it left, and its workers'
    shuffle buffers are replayed on positions alone — nothing read or decoded."""
    if spec.resampled:  # draws with replacement: only how many are left counts
        return range(max(spec.epoch_size() - sum(w * k for w, k in legs) * spec.batch_size, 0))
    rest: Sequence[int] = range(spec.total)
    for world, k in legs:
        taken: set[int] = set()
        for rank, worker in itertools.product(range(world), range(max(spec.workers, 1))):
            mine = worker_share(rank_share(rest, world, rank, spec.batch_size), spec.workers, worker, spec.batch_size)
            order = buffered(iter(mine), spec, epoch, rank, worker)
            taken.update(itertools.islice(order, consumed_by_worker(k, spec.workers, worker) * spec.batch_size))
        rest = [p for p in rest if p not in taken]
    return rest


def shard_order(spec: StreamSpec, epoch: int) -> list[Shard]:
    order = list(spec.shards)
    if spec.train:
        random.Random(f"{spec.seed}/{epoch}/shards").shuffle(order)
    return order


def pieces(order: list[Shard], wanted: Sequence[int]) -> list[tuple[Shard, list[int]]]:
    """`wanted` (increasing positions of the ordered shards) as (shard, its sample indices), in order."""
    ends = list(itertools.accumulate(s.count for s in order))
    out: list[tuple[Shard, list[int]]] = []
    i = -1
    for p in wanted:
        if i < 0 or p >= ends[i]:
            i = bisect.bisect_right(ends, p)
            out.append((order[i], []))
        out[-1][1].append(p - (ends[i] - order[i].count))
    return out


class _Reader:
    """Raw samples (shard, key, fields) of one worker's stream, with faults logged and counted."""

    def __init__(self, spec: StreamSpec, worker: int, epoch: int, faults: FaultCounts, planned: int):
        self.spec, self.worker, self.epoch, self.faults = spec, worker, epoch, faults
        self.allowed = math.floor(spec.max_bad_fraction * planned)
        self.where = f"rank {spec.rank} worker {worker}"

    def exact(self, wanted: Sequence[int]) -> Iterator[tuple[str, str, dict] | None]:
        """One item per position of `wanted`, in order: its sample, or None where it is lost (so
        the shuffle buffer sees every position, as `untrained` replays it)."""
        for shard, indices in pieces(shard_order(self.spec, self.epoch), wanted):
            yield from self._read(shard, indices)

    def resampled(self, leg: int = 0) -> Iterator[tuple[str, str, dict]]:
        """Shards drawn with replacement; a later leg of the epoch (another world size) draws anew."""
        again = f"/{leg}" if leg else ""
        rng = random.Random(f"{self.spec.seed}/{self.epoch}/{self.spec.rank}/{self.worker}/shards{again}")
        shards = [s for s in self.spec.shards if s.count]  # RankStream refuses a spec without samples
        while True:
            shard = rng.choice(shards)
            yield from self._read(shard, list(range(shard.count)))

    def _read(self, shard: Shard, indices: list[int]) -> Iterator[tuple[str, str, dict] | None]:
        """The samples at `indices` (increasing) of one shard; those it skips are read, never decoded."""
        first, stop = indices[0], indices[-1] + 1
        keep = None if len(indices) == stop - first else set(indices)
        n = 0
        try:
            for i, (key, fields) in enumerate(read_samples(shard.path)):
                if i >= stop:
                    return
                n = i + 1
                if i >= first and (keep is None or i in keep):
                    yield shard.path, key, fields
        except TruncatedShard as e:
            yield from self._lost(indices, e.samples, f"{e}")
            return
        except FileNotFoundError:
            yield from self._lost(indices, 0, f"shard {shard.path} vanished while training: restore it")
            return
        if n < stop:  # fewer samples than the index says: the tar was cut at a member boundary
            yield from self._lost(indices, n, f"{shard.path} holds {n} samples, its index says {shard.count}: "
                                              "re-write it with `neumeta-dist shards`")

    def _lost(self, indices: list[int], read: int, why: str) -> Iterator[None]:
        n = sum(1 for i in indices if i >= read)
        self.lose(n, why)
        yield from itertools.repeat(None, n)

    def lose(self, n: int, why: str) -> None:
        self.faults.lost += n
        log.warning("lost %d samples: %s", n, why)
        self.check(why)

    def corrupt(self, shard: str, key: str, err: Exception) -> None:
        self.faults.corrupt += 1
        log.warning("corrupt sample %s in %s (%s): dropped from its batch", key, shard, err)
        self.check(f"sample {key} in {shard}: {err}")

    def check(self, last: str) -> None:
        bad = self.faults.corrupt + self.faults.lost
        if bad > self.allowed:
            raise DataError(f"{bad} unreadable samples in the share of {self.where} exceed data.max_bad_fraction="
                            f"{self.spec.max_bad_fraction:g} (last: {last}); re-write the bad shards with "
                            "`neumeta-dist shards` or raise data.max_bad_fraction")


def shuffled(samples: Iterator, size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer: each sample leaves at a random point of the next `size` arrivals."""
    if size <= 1:
        yield from samples
        return
    buf = []
    for s in samples:
        if len(buf) < size:
            buf.append(s)
            continue
        j = rng.randrange(size)
        buf[j], s = s, buf[j]
        yield s
    rng.shuffle(buf)
    yield from buf


# ---------------------------------------------------------------- decode + transform


def decode(fields: dict, how: str, channels: int):
    """The sample's image (PIL image or uint8 CHW tensor) and label; raises on a corrupt sample."""
    data = fields.get("jpg", fields.get("png"))
    if data is None or "cls" not in fields:
        raise ValueError(f"sample has {sorted(fields)}, needs an image (.jpg/.png) and .cls")
    label = int(fields["cls"])
    if how == "torchvision":
        from torchvision.io import ImageReadMode, decode_image
        mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
        with warnings.catch_warnings():  # 0.29 points to TorchCodec; torchvision.io is what we support
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode), label
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    img = img.convert("RGB" if channels == 3 else "L")  # also forces the full decode: errors surface here
    return img, label


def crop_box(h: int, w: int, rng: random.Random, min_scale: float) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (torchvision's algorithm), drawn from `rng` instead of global state."""
    area, log_r = h * w, (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(*log_r))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    ratio = w / h
    cw, ch = (w, round(w / (4 / 3))) if ratio > 4 / 3 else ((round(h * 3 / 4), h) if ratio < 3 / 4 else (w, h))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def transform(img, spec: StreamSpec, rng: random.Random) -> torch.Tensor:
    """Train: random-resized crop + horizontal flip; eval: resize to size/crop then centre crop."""
    from torchvision.transforms.v2 import functional as F
    h, w = F.get_size(img)
    s = spec.image_size
    if spec.train:
        top, left, ch, cw = crop_box(h, w, rng, spec.min_crop_scale)
        img = F.resized_crop(img, top, left, ch, cw, [s, s], antialias=True)
        if rng.random() < 0.5:
            img = F.horizontal_flip(img)
    else:
        img = F.center_crop(F.resize(img, round(s / spec.eval_crop), antialias=True), [s, s])
    return F.pil_to_tensor(img) if not isinstance(img, torch.Tensor) else img


def normalize(x: torch.Tensor, spec: StreamSpec) -> torch.Tensor:
    """uint8 batch → normalised float. Done after the batch reaches its device: workers hand
    over (and pin, and copy) a quarter of the bytes, and on a GPU the arithmetic is free."""
    mean, std = _channel_stats(tuple(spec.mean), tuple(spec.std), x.device)
    return x.float().div_(255).sub_(mean).div_(std)


@functools.lru_cache(maxsize=16)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """Mean and std as (1, C, 1, 1) tensors on `device`, made once: built per batch from the
    Python lists, they were a host tensor and a blocking copy per batch."""
    stats = upload(torch.tensor([mean, std], dtype=torch.float32), device)
    return stats[0].view(1, -1, 1, 1), stats[1].view(1, -1, 1, 1)


# ---------------------------------------------------------------- the dataset each worker runs


@dataclass
class Position:
    """Where a rank's stream starts; shared with persistent workers (they keep their own copy
    of the dataset object, so a plain attribute set in the main process would not reach them)."""

    epoch: object = field(default_factory=lambda: mp.Value("q", 0))
    skip: object = field(default_factory=lambda: mp.Value("q", 0))


class ShardStream(IterableDataset):
    """Yields (x, y, faults, keys) batches of one rank: x uint8 (see `normalize`), `faults` the
    worker's cumulative FaultCounts tensor for this epoch, prefixed with (epoch, worker).
    `first` = (epoch, this rank's positions in it, legs before) where other world sizes trained
    part of that epoch; every other epoch deals all its positions."""

    def __init__(self, spec: StreamSpec, position: Position | None = None,
                 first: tuple[int, Sequence[int], int] | None = None):
        self.spec, self.position, self.first = spec, position or Position(), first

    def share(self, epoch: int) -> tuple[Sequence[int], int]:
        """This rank's positions of `epoch`, and how many legs of other world sizes came before."""
        spec = self.spec
        if self.first is not None and self.first[0] == epoch:
            return self.first[1:]
        return rank_share(range(spec.epoch_size()), spec.world, spec.rank, spec.batch_size), 0

    def __iter__(self):
        info = get_worker_info()
        spec = self.spec
        epoch, skip = self.position.epoch.value, self.position.skip.value
        # The DataLoader starts every iteration at worker 0, but after resuming at batch `skip`
        # the next batch belongs to worker `skip mod workers`: worker ids rotate to match.
        worker = (info.id + skip) % info.num_workers if info else 0
        faults = FaultCounts()
        if spec.train:
            share, leg = self.share(epoch)
            mine = worker_share(share, spec.workers, worker, spec.batch_size)
            planned = len(mine) // spec.batch_size
            reader = _Reader(spec, worker, epoch, faults, len(mine))
            raw = reader.resampled(leg) if spec.resampled else reader.exact(mine)
            raw = buffered(raw, spec, epoch, spec.rank, worker)
        else:
            mine = eval_positions(spec, worker)
            planned = math.ceil(len(mine) / spec.batch_size)
            reader = _Reader(spec, worker, epoch, faults, len(mine))
            raw = reader.exact(mine)
            skip = 0
        yield from self._batches(raw, reader, planned, consumed_by_worker(skip, spec.workers, worker)
                                 if spec.train else 0, epoch, worker)

    def _batches(self, raw, reader: _Reader, planned: int, skip: int, epoch: int, worker: int):
        spec, faults, previous, pending = self.spec, reader.faults, None, 0
        for b in range(planned):
            chunk = list(itertools.islice(raw, spec.batch_size))
            if b < skip:  # already consumed before the resume: read, never decoded
                continue
            rng = random.Random(f"{spec.seed}/{epoch}/{spec.rank}/{worker}/{b}/augment")
            images, labels, keys = [], [], []
            for shard, key, fields in filter(None, chunk):  # None: a lost sample, counted by the reader
                try:
                    img, label = decode(fields, spec.decode, spec.channels)
                    images.append(transform(img, spec, rng))
                except Exception as e:  # any decoder error is this sample's fault, not the run's
                    reader.corrupt(shard, key, e)
                    continue
                labels.append(label)
                keys.append(key)
            if images:
                previous = (torch.stack(images), torch.tensor(labels), keys)
                copies, faults.padded, pending = 1 + pending, faults.padded + pending, 0
            elif not spec.train:
                continue  # evaluation has no batch count to keep
            elif previous is None:
                pending += 1  # nothing to repeat yet: repeat the first good batch when it comes
                continue
            else:
                copies, faults.padded = 1, faults.padded + 1
            for _ in range(copies):
                yield (*previous[:2], torch.cat([torch.tensor([epoch, worker]), faults.tensor()]), previous[2])
        if pending:
            raise DataError(f"every sample in the share of {reader.where} was lost: the shards are unreadable; "
                            "re-write them with `neumeta-dist shards`")


def make_loader(spec: StreamSpec, position: Position, persistent: bool, pin_memory: bool,
                first: tuple[int, Sequence[int], int] | None = None) -> DataLoader:
    import PIL.Image  # noqa: F401  imported once here, so forked workers inherit them instead of
    import torchvision.io  # noqa: F401  each paying seconds of imports on its first batch
    import torchvision.transforms.v2.functional  # noqa: F401
    workers = spec.workers
    return DataLoader(ShardStream(spec, position, first), batch_size=None, num_workers=workers,
                      persistent_workers=persistent and workers > 0, pin_memory=pin_memory)


def one_line(e: Exception) -> str:
    """A DataError raised in a worker comes back wrapped with its traceback: keep its message."""
    text = str(e).strip().splitlines()
    last = text[-1] if text else ""
    return last.split("DataError: ", 1)[-1]


class RankStream:
    """Endless training batches (x uint8, y) of this rank over epochs, from `start`: a data
    position (whatever world sizes trained its epoch so far), or batches per rank of this world."""

    def __init__(self, spec: StreamSpec, start: DataPosition | int = 0, missing: int = 0, pin_memory: bool = False):
        self.spec, self.missing = spec, missing
        self.per_epoch = spec.rank_batches()
        if self.per_epoch < 1 or spec.total < 1:
            raise DataError(f"{spec.total} training samples give no whole batch per rank (world {spec.world} × "
                            f"batch {spec.batch_size}): use more shards or a smaller data.batch_size")
        world, batch = spec.world, spec.batch_size
        if isinstance(start, int):
            start = DataPosition.from_batches(start, self.per_epoch, world, batch)
        start = start.advance(0, spec.epoch_size(), world, batch)
        before, skip = start.current_leg(world)
        first = (start.epoch, rank_share(untrained(spec, start.epoch, before), world, spec.rank, batch), len(before))
        self.position = Position()
        self.epoch = start.epoch
        self.position.epoch.value, self.position.skip.value = self.epoch, skip
        self.loader = make_loader(spec, self.position, persistent=True, pin_memory=pin_memory, first=first)
        self.it = iter(self.loader)
        self.faults: dict[tuple[int, int], torch.Tensor] = {}
        self.keys: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            try:
                x, y, faults, self.keys = next(self.it)
                break
            except StopIteration:
                self.epoch += 1
                self.position.epoch.value, self.position.skip.value = self.epoch, 0
                self.it = iter(self.loader)
            except DataError as e:
                raise DataError(one_line(e)) from None
        self.faults[(int(faults[0]), int(faults[1]))] = faults[2:]
        return x, y

    def fault_counts(self) -> FaultCounts:
        total = sum(self.faults.values(), torch.zeros(3, dtype=torch.long))
        return FaultCounts(*map(int, total))


def eval_batches(spec: StreamSpec, pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of every sample once, x uint8 (spec.train must be False)."""
    try:
        for x, y, _, _ in make_loader(spec, Position(), persistent=False, pin_memory=pin_memory):
            yield x, y
    except DataError as e:
        raise DataError(one_line(e)) from None


def check_missing(shards: ShardList, max_bad_fraction: float, what: str) -> None:
    """Missing shards are logged by name; over the budget they stop the run before it starts."""
    lost = sum(s.count for s in shards.missing)
    for s in shards.missing:
        log.warning("missing shard %s (%d samples) of %s: left out", s.path, s.count, what)
    total = lost + shards.count
    if lost > max_bad_fraction * total:
        names = ", ".join(Path(s.path).name for s in shards.missing[:3])
        raise DataError(f"{len(shards.missing)} missing shards of {what} ({names}…) hold {lost} of {total} samples, "
                        f"over data.max_bad_fraction={max_bad_fraction:g}: restore them or raise the budget")
    if not shards.shards:
        raise DataError(f"no shard of {what} is readable")


def stream_spec(shards: ShardList, cfg: DataConfig, seed: int, train: bool, batch_size: int, rank: int,
                world: int, image_size: int) -> StreamSpec:
    """The StreamSpec of a resolved shard list under a DataConfig (`cfg`)."""
    idx = shards.index
    return StreamSpec(shards=shards.shards, train=train, batch_size=batch_size, rank=rank, world=world,
                      workers=cfg.num_workers, resampled=cfg.mode == "resampled",
                      batches_per_rank=cfg.batches_per_rank or shards.count // (world * batch_size), seed=seed,
                      shuffle_buffer=cfg.shuffle_buffer, decode=cfg.decode, image_size=image_size,
                      channels=idx["channels"], mean=tuple(idx["mean"]), std=tuple(idx["std"]),
                      min_crop_scale=cfg.min_crop_scale, eval_crop=cfg.eval_crop,
                      max_bad_fraction=cfg.max_bad_fraction)
