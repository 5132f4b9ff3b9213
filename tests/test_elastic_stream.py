"""The WebDataset stream resumed mid-epoch on another number of processes (stream.py
`untrained`): the old world's consumed samples are recomputed by replaying its workers'
shuffle buffers on positions, and the rest of the epoch is dealt to the new world.

Each rank's stream is built in this process with its rank and world size (a rank's share
depends on nothing else), with real DataLoader worker processes; samples are told apart by key.
The last test kills a teacher training on shards (2 real processes, gloo) mid-epoch and
relaunches it on 1, counting samples with the NEUMETA_TRACE_DIR probe.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_stream import _data, _truncate, _write

from neumeta_dist.data import load_splits
from neumeta_dist.data.position import DataPosition
from neumeta_dist.data.stream import RankStream
from neumeta_dist.training.probe import read_trace

BATCH = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """45 samples in shards of 7 (the last of 3): 45 mod 8 leaves a tail on 2 ranks."""
    return _write(tmp_path_factory.mktemp("elastic"), per_class=15, maxcount=7)


@pytest.fixture(scope="module")
def train(shards):
    return load_splits(_data(shards, num_workers=2, shuffle_buffer=8), seed=5).train


def _leg(train, world: int, start: DataPosition, batches: int | None) -> tuple[list[list[str]], DataPosition]:
    """Every rank of `world` from `start` for `batches` batches (None: to the epoch's end): the
    keys each rank trained, batch by batch, and the position they leave."""
    specs = [train.spec(True, BATCH, rank, world) for rank in range(world)]
    n = specs[0].epoch_size()
    here = start.advance(0, n, world, BATCH)
    batches = here.rank_batches(n, world, BATCH) if batches is None else batches
    return [_take(RankStream(spec, start), batches) for spec in specs], here.advance(batches, n, world, BATCH)


def _take(stream: RankStream, batches: int) -> list[str]:
    keys = []
    for _ in range(batches):
        next(stream)
        keys += stream.keys
    return keys


def _chain(train, legs: list[tuple[int, int | None]]) -> tuple[list[str], DataPosition]:
    pos, seen = DataPosition(), []
    for world, batches in legs:
        keys, pos = _leg(train, world, pos, batches)
        seen += [k for rank in keys for k in rank]
    return seen, pos


@pytest.mark.parametrize("legs", [
    [(2, 2), (1, None)],  # 2 → 1
    [(1, 3), (2, None)],  # 1 → 2
    [(2, 1), (1, 3), (2, None)],  # 2 → 1 → 2 in one epoch: the consumed sets compose
])
def test_a_resized_stream_trains_each_sample_of_the_epoch_once_losing_less_than_a_global_batch(train, legs):
    seen, end = _chain(train, legs)
    whole, _ = _chain(train, [(2, None)])  # the uninterrupted run on 2 ranks
    counts = Counter(seen)
    assert max(counts.values()) == 1, counts.most_common(2)
    assert end == DataPosition(1, 0)  # the epoch finished: the next one starts afresh
    last_world = legs[-1][0]
    assert len(train) - len(seen) < last_world * BATCH  # the tail: fewer than one global batch
    # as a set, the uninterrupted run's samples but for the two runs' tails
    assert len(set(whole) - set(seen)) < last_world * BATCH
    assert len(set(seen) - set(whole)) <= len(train) - len(whole)


def test_resumed_on_the_world_of_the_last_leg_it_continues_that_leg_batch_for_batch(train):
    """2 → 1, checkpointed 3 batches into the 1-process leg and resumed on 1 process: the same
    batches as the 1-process leg run through (a leg keeps its order, like any same-size resume)."""
    _, mid = _chain(train, [(2, 2)])
    through, _ = _leg(train, 1, mid, None)
    _, later = _chain(train, [(2, 2), (1, 3)])
    assert later.legs == ((2, 2), (1, 3))
    rest, _ = _leg(train, 1, later, None)
    assert rest[0] == through[0][3 * BATCH:]


def test_the_epoch_after_a_resize_is_the_new_worlds_ordinary_epoch(train):
    _, pos = _chain(train, [(2, 2)])
    stream = RankStream(train.spec(True, BATCH, 0, 1), pos)
    _take(stream, pos.rank_batches(len(train), 1, BATCH))
    fresh = RankStream(train.spec(True, BATCH, 0, 1), DataPosition(1, 0))
    assert _take(stream, stream.per_epoch) == _take(fresh, fresh.per_epoch)


def test_a_resampled_stream_resized_mid_epoch_draws_the_rest_of_its_epoch_anew(shards):
    """Resampled epochs have no order to continue: the new world draws what is left of the
    epoch's draws (48 on 2 ranks, 16 taken; 24 on 1 rank: 2 batches left) from fresh streams."""
    train = load_splits(_data(shards, mode="resampled", batches_per_rank=6, num_workers=2, shuffle_buffer=8),
                        seed=5).train
    old, pos = _leg(train, 2, DataPosition(), 2)
    assert pos == DataPosition(0, 16, ((2, 2),))
    stream = RankStream(train.spec(True, BATCH, 0, 1), pos)
    first = _take(stream, 1)
    assert first != old[0][:BATCH]  # not rank 0's first draws again
    _take(stream, 2)
    assert stream.epoch == 1  # the third batch is the next epoch's


def test_samples_lost_to_a_truncated_tar_before_the_resize_shift_nothing(tmp_path):
    """The reader hands the shuffle buffer a placeholder for each lost sample, so the buffer sees
    every position, as the replay assumes: the resized stream still repeats no sample."""
    out = _write(tmp_path, per_class=15, maxcount=7)
    lost = _truncate(out, "train-000002.tar", 3000) - 1  # the first sample survives
    train = load_splits(_data(out, num_workers=2, shuffle_buffer=8, max_bad_fraction=0.9), seed=5).train
    seen, _ = _chain(train, [(2, 2), (1, None)])
    assert max(Counter(seen).values()) == 1
    assert len(train) - lost - len(seen) < BATCH


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Square grey images at the training size with the whole image as the only crop: every
# augmentation (crop, resize, flip) leaves a sample's pixels as they are, so the probe's
# fingerprint of an image names its sample on any rank, worker or batch.
TEACHER = ["data.image_size=32", "data.batch_size=8", "data.eval_batch_size=64", "data.num_workers=2",
           "data.shuffle_buffer=16", "data.min_crop_scale=1.0", "data.max_bad_fraction=0",
           "data.val_shards=index.json#test", "data.test_shards=index.json#test", "model.width=0.125",
           "teacher.epochs=1", "teacher.lr=0.05", "teacher.save_every=2", "train.log_every=1",
           "train.keep_checkpoints=20", "teacher.checkpoint=", "train.precision=fp32", "train.channels_last=false"]


def _grey_shards(root: Path, per_class: int) -> Path:
    from PIL import Image

    from neumeta_dist.data.shards import write_dataset
    levels = iter(range(0, 256, 2))
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(3):
            folder = root / "src" / split / f"n0{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (32, 32), (next(levels),) * 3).save(folder / f"n0{c}_{i}.JPEG", quality=100)
    write_dataset("imagefolder", root / "src", root / "shards", maxcount=10, holdout=0.0, verify=True)
    return root / "shards"


def _teacher(run: Path, shards: Path, nproc: int, trace: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", "configs/accelerate/ddp.yaml", "--num_processes",
           str(nproc), "--mixed_precision", "no", "launch/train.py", "--config", "configs/imagenet_resnet18.yaml",
           "--stage", "0", f"data.root={shards}", *TEACHER, f"run_dir={run}"]
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1", "NEUMETA_TRACE_DIR": str(run / trace),
           **({"NEUMETA_SIGKILL_AT_STEP": str(kill_at)} if kill_at else {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def _prints(trace: Path, rank: int) -> dict[int, list[str]]:
    """Step → the fingerprints of the images rank `rank` trained in it (stage 0)."""
    return {step: prints for (_, step, _), prints in read_trace(trace, rank).items()}


def test_shard_teacher_killed_mid_epoch_on_two_processes_resumes_on_one_training_each_sample_once(tmp_path):
    """99 samples, batches of 8: 6 steps per epoch on 2 processes. Killed after its third step
    (the checkpoint after the second holds 32 samples in), relaunched on 1 process: the 67 left are 8 batches
    of 8 and a tail of 3 — each sample of the epoch trained once, 3 (< 8) left out."""
    shards = _grey_shards(tmp_path, per_class=33)
    run = tmp_path / "run"
    killed = _teacher(run, shards, 2, "two", kill_at=3)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    resumed = _teacher(run, shards, 1, "one")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming teacher from checkpoint_00000002 (step 2, world size 2 → 1)" in resumed.stdout
    two = [_prints(run / "two", rank) for rank in (0, 1)]
    before = [f for rank in two for step in (0, 1) for f in rank[step]]
    after = [f for step, prints in sorted(_prints(run / "one", 0).items()) for f in prints]
    assert sorted(_prints(run / "one", 0)) == list(range(2, 10))  # 8 steps of 8 on one process
    trained = Counter(before + after)
    assert max(trained.values()) == 1 and len(trained) == 32 + 64  # repeated: 0; left out: 99 − 96 = 3
    redone = {f for rank in two for f in rank[2]}  # step 2 was trained after the checkpoint, then lost to the kill
    assert redone <= set(after)  # the fingerprint names a sample: the ones lost to the kill come back
