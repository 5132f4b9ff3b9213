"""The data position: an in-memory epoch dealt over any number of ranks, and carried across a
change of world size without repeating or skipping a sample (data/position.py)."""
from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import BatchSampler, TensorDataset

from neumeta_dist.config import load_config
from neumeta_dist.data import train_batches
from neumeta_dist.data.position import DataPosition

N, BATCH = 203, 8  # 203 = 12 global batches of 2 × 8 + 11 left over


def _batches(world: int, rank: int, start, seed: int = 3):
    cfg = load_config(None, [f"data.batch_size={BATCH}", f"train.seed={seed}"])
    acc = SimpleNamespace(process_index=rank, num_processes=world, device=torch.device("cpu"))
    return train_batches(cfg, acc, TensorDataset(torch.arange(N), torch.zeros(N)), start)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_one_world_size_trains_the_batches_accelerate_dealt(world):
    """Runs that never change their world size keep their data order: Accelerate's seedable
    sampler, sharded batch by batch, epoch after epoch."""
    from accelerate.data_loader import BatchSamplerShard, SeedableRandomSampler
    sampler = SeedableRandomSampler(range(N), data_seed=3)
    expected = defaultdict(list)
    for epoch in range(2):
        for rank in range(world):
            sampler.set_epoch(epoch)  # (each pass over it moves it to the next epoch)
            batches = BatchSampler(sampler, BATCH, drop_last=True)
            expected[rank] += [list(b) for b in BatchSamplerShard(batches, world, rank)]
    for rank in range(world):
        data = _batches(world, rank, 0)
        assert [next(data)[0].tolist() for _ in range(2 * data.per_epoch)] == expected[rank]


def _chain(segments: list[tuple[int, int]]) -> dict[int, list[int]]:
    """Train `batches` per rank on `world` ranks for each (world, batches), each segment resuming
    at the position the previous one reached; → epoch: the sample ids trained in it."""
    seen, pos = defaultdict(list), DataPosition()
    for world, batches in segments:
        ranks = [_batches(world, r, pos) for r in range(world)]
        for _ in range(batches):
            for data in ranks:
                seen[data.position.advance(0, N, world, BATCH).epoch] += next(data)[0].tolist()
        assert len({d.position for d in ranks}) == 1
        pos = ranks[0].position
    return seen


@pytest.mark.parametrize("segments", [
    [(2, 5), (1, 7), (2, 20)],  # 2 → 1 → 2 mid-epoch, then into the next epochs
    [(1, 3), (2, 2), (3, 1), (1, 30)],
    [(2, 12), (1, 1)],  # the switch at an epoch end
])
def test_switching_world_size_trains_each_sample_of_an_epoch_once_leaving_out_a_tail(segments):
    """Every epoch trains a prefix of its seeded order, each position once; what it leaves out
    is the tail shorter than one global batch of the world that finished it (drop_last)."""
    seen = _chain(segments)
    for epoch, ids in seen.items():
        order = torch.randperm(N, generator=torch.Generator().manual_seed(3 + epoch)).tolist()
        assert len(ids) == len(set(ids)), f"epoch {epoch}: a sample trained twice"
        assert sorted(ids) == sorted(order[:len(ids)]), f"epoch {epoch}: not a prefix of its order"
        if epoch < max(seen):  # finished epochs lose less than one global batch (≤ 3 ranks × 8)
            assert N - len(ids) < 3 * BATCH


def test_position_after_a_switch_counts_the_old_and_the_new_ranks_batches():
    pos = DataPosition.from_batches(12, 12, 2, BATCH)  # the end of epoch 0 on 2 ranks
    assert pos == DataPosition(1, 0)
    pos = DataPosition(1, 3 * 2 * BATCH, ((2, 3),)).advance(5, N, 1, BATCH)  # 3 batches × 2 ranks, then 5 on 1
    assert pos == DataPosition(1, 48 + 40, ((2, 3), (1, 5)))
    assert pos.current_leg(2) == (((2, 3), (1, 5)), 0) and pos.current_leg(1) == (((2, 3),), 5)
    assert pos.advance(1, N, 2, BATCH).legs == ((2, 3), (1, 5), (2, 1))  # 2 → 1 → 2: three legs
    assert pos.rank_batches(N, 2, BATCH) == (N - 88) // 16 == 7
    assert pos.advance(7, N, 2, BATCH) == DataPosition(2, 0)  # 3 ids of epoch 1 left out
