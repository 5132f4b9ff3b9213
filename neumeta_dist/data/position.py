"""Where a training stream stands in its epochs, and how the rest of an epoch is dealt to ranks.

An epoch is a sequence of sample positions (the in-memory split in a seeded order, or the
shards' positions, stream.py). The position is `(epoch, consumed)`: the first `consumed`
positions of that epoch's order are trained, the rest are not — one number per epoch, whatever
world size consumed them, so a checkpoint written on N processes resumes on M.

From `consumed` on, the epoch is cut into global batches of `batch` positions and global batch
j goes to rank j mod world, (n − consumed) // (world × batch) batches per rank. With
consumed = 0 that is Accelerate's layout (a seeded sampler sharded batch by batch), so a run
that never changes its world size trains the batches it always did; and after every rank
took k batches the trained positions are again a prefix, consumed + k × world × batch.

The tail, (n − consumed) mod (world × batch) positions, is not trained in that epoch: the
rule of every epoch (drop_last), applied to what is left of it. So an epoch trains each of
its positions at most once, and leaves out fewer than one global batch of the world that
finishes it; a switch of world size loses no other sample and repeats none.

`legs` says which world sizes consumed the epoch so far: (world, batches per rank) in order,
the last one still running. In-memory data needs only the count (its trained positions are a
prefix); the shard stream's shuffle buffers leave a consumed *set*, which it recomputes from
the legs (stream.py), so a stage resized twice in one epoch (2 → 1 → 2) still knows it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataPosition:
    epoch: int = 0
    consumed: int = 0  # positions of the epoch already trained (for in-memory data, the leading ones)
    legs: tuple[tuple[int, int], ...] = ()  # (world, batches per rank) that consumed them, in order

    @classmethod
    def from_batches(cls, batches: int, per_epoch: int, world: int, batch: int) -> "DataPosition":
        """The position after `batches` batches per rank of whole epochs of `per_epoch` (one world size)."""
        epoch, taken = divmod(batches, per_epoch)
        return cls(epoch, taken * world * batch, ((world, taken),) if taken else ())

    def rank_batches(self, n: int, world: int, batch: int) -> int:
        """Whole batches each rank has left in this epoch of `n` positions."""
        return (n - self.consumed) // (world * batch)

    def batch_start(self, k: int, rank: int, world: int, batch: int) -> int:
        """First position of `rank`'s k-th batch from here."""
        return self.consumed + (k * world + rank) * batch

    def advance(self, batches: int, n: int, world: int, batch: int) -> "DataPosition":
        """The position once every rank has taken `batches` more batches (across epoch ends);
        `advance(0, …)` steps over an epoch end that leaves this world no whole batch."""
        if n < world * batch:
            raise ValueError(f"{n} positions give no batch of {batch} to each of {world} ranks")
        pos = self
        while batches >= (left := pos.rank_batches(n, world, batch)):
            batches, pos = batches - left, DataPosition(pos.epoch + 1, 0)
        if not batches:
            return pos
        legs = pos.legs
        if legs and legs[-1][0] == world:  # the same world goes on with its leg
            legs = legs[:-1] + ((world, legs[-1][1] + batches),)
        else:
            legs = legs + ((world, batches),)
        return DataPosition(pos.epoch, pos.consumed + batches * world * batch, legs)

    def current_leg(self, world: int) -> tuple[tuple[tuple[int, int], ...], int]:
        """(the legs before the one `world` runs now, batches per rank it has done): a world
        that wrote the last leg continues it, another starts a new one."""
        if self.legs and self.legs[-1][0] == world:
            return self.legs[:-1], self.legs[-1][1]
        return self.legs, 0
