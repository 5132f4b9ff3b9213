"""The WebDataset pipeline: exact epochs across ranks × workers, resampled epochs, resume, and
faults (corrupt image, truncated tar, missing shard) logged, counted, and fatal over budget.

Most tests build each rank's stream with its rank and world size in one process (a rank's
share depends on nothing else: no collective is involved), with real DataLoader worker
processes; `test_real_ranks_under_accelerate_...` runs 2 real ranks (accelerate launch, gloo)
× 2 workers each.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import deadline, make_image_folder

from neumeta_dist.config import DataConfig
from neumeta_dist.data import DataError, load_splits
from neumeta_dist.data.shards import read_index, write_dataset
from neumeta_dist.data.stream import Position, RankStream, make_loader


def _write(tmp_path, per_class=16, maxcount=7, val=0, corrupt: str | None = None) -> Path:
    src = make_image_folder(tmp_path / "in", per_class=per_class, val=val)
    if corrupt:  # the writer copies bytes as they are: a broken JPEG reaches the shards
        path = src / "train" / f"{corrupt}.JPEG"
        path.write_bytes(path.read_bytes()[:120])
    # verify=False: the writer would refuse the broken JPEG; the reader's handling is under test
    write_dataset("imagefolder", src, tmp_path / "out", maxcount=maxcount, holdout=0.0, verify=not corrupt)
    return tmp_path / "out"


def _data(out: Path, **kw) -> DataConfig:
    base = dict(dataset="shards", root=str(out), image_size=16, batch_size=4, num_workers=2, shuffle_buffer=8,
                val_shards="index.json#train", test_shards="index.json#train", max_bad_fraction=0.0)
    return DataConfig(**{**base, **kw})


def _epoch(stream: RankStream) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    return [(*next(stream), stream.keys) for _ in range(stream.per_epoch)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """48 training samples in uneven shards (7, 7, 7, 7, 7, 7, 6) + 7 test samples."""
    return _write(tmp_path_factory.mktemp("shards"), val=2, maxcount=7)


def test_two_ranks_by_two_workers_see_every_sample_exactly_once_per_epoch(shards):
    train = load_splits(_data(shards), seed=3).train
    keys = {r: [[], []] for r in (0, 1)}
    for rank in (0, 1):
        stream = RankStream(train.spec(True, 4, rank, 2))
        assert stream.per_epoch == 6  # 48 samples / (2 ranks × 4): the same count on both ranks
        for epoch in (0, 1):
            for x, y, k in _epoch(stream):
                assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8 and len(y) == 4
                keys[rank][epoch] += k
    for epoch in (0, 1):
        seen = keys[0][epoch] + keys[1][epoch]
        assert len(seen) == len(set(seen)) == 48, collections.Counter(seen).most_common(2)
    assert keys[0][0] != keys[0][1]  # a new order every epoch


def test_training_drops_only_the_remainder_of_uneven_shards_and_never_repeats(tmp_path):
    out = _write(tmp_path, per_class=13, maxcount=5)  # 39 samples: 39 mod (2 × 4) = 7 left out
    train = load_splits(_data(out), seed=0).train
    seen = []
    for rank in (0, 1):
        stream = RankStream(train.spec(True, 4, rank, 2))
        assert stream.per_epoch == 4
        seen += [k for _, _, ks in _epoch(stream) for k in ks]
    assert len(seen) == len(set(seen)) == 32


def test_evaluation_scores_every_sample_once_across_ranks(shards):
    test = load_splits(_data(shards, test_shards="index.json#test"), seed=0).test
    assert len(test) == 6
    seen = []
    for rank in (0, 1):
        spec = test.spec(False, 4, rank, 2)
        for x, y, _, keys in make_loader(spec, Position(), persistent=False, pin_memory=False):
            seen += keys
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 6
    assert all(k.startswith("val/") for k in seen)


def test_resampled_mode_yields_the_configured_batches_per_rank(shards):
    train = load_splits(_data(shards, mode="resampled", batches_per_rank=5), seed=0).train
    for rank in (0, 1):
        spec = train.spec(True, 4, rank, 2)
        batches = list(make_loader(spec, Position(), persistent=False, pin_memory=False))
        assert len(batches) == 5 and all(len(b[1]) == 4 for b in batches)
        assert RankStream(spec).per_epoch == 5


@pytest.mark.parametrize("start", [3, 8])  # mid-epoch 0, and mid-epoch 1
def test_resume_continues_mid_epoch_with_the_same_batches_and_no_repeats(shards, start):
    train = load_splits(_data(shards), seed=1).train
    spec = train.spec(True, 4, 1, 2)
    stream = RankStream(spec)
    full = [(*next(stream), stream.keys) for _ in range(12)]  # two epochs of 6
    resumed = RankStream(spec, start=start)
    rest = [(*next(resumed), resumed.keys) for _ in range(12 - start)]
    for (xa, ya, ka), (xb, yb, kb) in zip(full[start:], rest):
        assert ka == kb and torch.equal(ya, yb) and torch.equal(xa, xb)  # same crops and flips too
    epoch_start = 6 * (start // 6)
    consumed = {k for _, _, ks in full[epoch_start:start] for k in ks}
    assert not consumed & {k for _, _, ks in rest[:12 - start - (6 if start < 6 else 0)] for k in ks}


def test_a_corrupt_image_is_logged_by_name_counted_and_dropped_within_budget(tmp_path, caplog):
    """In-process (num_workers=0) so pytest sees the log record; test_imagenet_pipeline checks
    that a worker process's record reaches stderr of a real run."""
    out = _write(tmp_path, corrupt="n01/n01_3")
    train = load_splits(_data(out, max_bad_fraction=0.2, num_workers=0), seed=0).train
    with deadline(60), caplog.at_level(logging.WARNING, logger="neumeta_dist.data"):
        stream = RankStream(train.spec(True, 4, 0, 1))
        sizes = [len(y) for _, y, _ in _epoch(stream)]
    assert len(sizes) == 12 and sorted(sizes)[0] == 3 and sum(sizes) == 47
    assert stream.fault_counts().corrupt == 1
    assert "corrupt sample train/n01/n01_3 in" in caplog.text and "train-0000" in caplog.text


def test_a_corrupt_image_over_budget_stops_with_a_clear_error_not_a_hang(tmp_path):
    out = _write(tmp_path, corrupt="n02/n02_5")
    train = load_splits(_data(out, max_bad_fraction=0.0), seed=0).train
    with deadline(60), pytest.raises(DataError) as e:
        _epoch(RankStream(train.spec(True, 4, 0, 1)))
    msg = str(e.value)
    assert "\n" not in msg and "train/n02/n02_5" in msg and "data.max_bad_fraction=0" in msg


def _truncate(out: Path, name: str, keep: int) -> int:
    path = out / name
    count = next(s["count"] for s in read_index(out / "index.json")["splits"]["train"]["shards"] if s["name"] == name)
    path.write_bytes(path.read_bytes()[:keep])
    return count


def test_a_truncated_tar_loses_its_tail_counted_and_keeps_the_batch_count(tmp_path, caplog):
    out = _write(tmp_path, maxcount=5)  # 48 samples: nine shards of 5 and one of 3
    lost = _truncate(out, "train-000004.tar", 600)  # inside the first member: no whole sample left
    train = load_splits(_data(out, max_bad_fraction=0.2, batch_size=2, num_workers=0, shuffle_buffer=0), seed=0).train
    with deadline(60), caplog.at_level(logging.WARNING, logger="neumeta_dist.data"):
        stream = RankStream(train.spec(True, 2, 0, 1))
        sizes = [len(y) for _, y, _ in _epoch(stream)]
    faults = stream.fault_counts()
    assert len(sizes) == 24 and faults.lost == lost == 5 and faults.padded >= 2  # 5 lost in a row: 2 empty batches
    assert "train-000004.tar is truncated" in caplog.text


def test_a_truncated_tar_over_budget_names_the_shard(tmp_path):
    out = _write(tmp_path, maxcount=5)
    _truncate(out, "train-000002.tar", 3000)
    train = load_splits(_data(out, max_bad_fraction=0.01), seed=0).train
    with deadline(60), pytest.raises(DataError, match=r"train-000002.tar is truncated.*max_bad_fraction"):
        _epoch(RankStream(train.spec(True, 4, 0, 1)))


def test_a_missing_shard_is_logged_left_out_and_counted(tmp_path, caplog):
    out = _write(tmp_path, maxcount=8)  # six shards of 8
    (out / "train-000003.tar").unlink()
    with caplog.at_level(logging.WARNING, logger="neumeta_dist.data"):
        train = load_splits(_data(out, max_bad_fraction=0.2), seed=0).train
    assert "missing shard" in caplog.text and "train-000003.tar (8 samples)" in caplog.text
    assert len(train) == 40
    seen = []
    for rank in (0, 1):
        stream = RankStream(train.spec(True, 4, rank, 2), missing=8)
        seen += [k for _, _, ks in _epoch(stream) for k in ks]
        assert stream.fault_counts().scalars(stream.missing)["data/lost_samples"] == 8
    assert len(seen) == len(set(seen)) == 40


def test_a_missing_shard_over_budget_stops_before_training(tmp_path):
    out = _write(tmp_path, maxcount=8)
    (out / "train-000001.tar").unlink()
    with pytest.raises(DataError, match=r"missing shards .*train-000001.tar.*max_bad_fraction"):
        load_splits(_data(out, max_bad_fraction=0.1), seed=0)


def test_shards_listed_by_brace_pattern_or_list_file_match_the_index(shards, tmp_path):
    names = [s["name"] for s in read_index(shards / "index.json")["splits"]["train"]["shards"]]
    (tmp_path / "list.txt").write_text("\n".join(str(shards / n) for n in names) + "\n")
    by_index = load_splits(_data(shards), seed=0).train
    by_brace = load_splits(_data(shards, shards="train-{000000..000006}.tar"), seed=0).train
    by_list = load_splits(_data(shards, shards=str(tmp_path / "list.txt")), seed=0).train
    assert by_index.shards.shards == by_brace.shards.shards == by_list.shards.shards
    assert len(by_index) == 48


def test_pil_and_torchvision_decoding_give_the_same_evaluation_batches(shards):
    a = load_splits(_data(shards, decode="pil", num_workers=0), seed=0).test.spec(False, 8)
    b = load_splits(_data(shards, decode="torchvision", num_workers=0), seed=0).test.spec(False, 8)
    xa = next(iter(make_loader(a, Position(), False, False)))[0]
    xb = next(iter(make_loader(b, Position(), False, False)))[0]
    assert xa.shape == xb.shape == (8, 3, 16, 16)
    assert (xa.int() - xb.int()).abs().max() <= 8  # same pixels up to the decoders' IDCT rounding


def test_shard_settings_are_validated_at_load_with_the_key_named():
    from neumeta_dist.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="data.mode='bogus' is not allowed"):
        load_config(None, ["data.mode=bogus"])
    with pytest.raises(ConfigError, match="data.max_bad_fraction"):
        load_config(None, ["data.max_bad_fraction=1.5"])
    with pytest.raises(ConfigError, match="data.train_limit"):
        load_config(None, ["data.dataset=shards", "data.train_limit=10"])


def test_a_wrong_shard_folder_or_missing_image_size_is_a_one_line_error(shards, tmp_path):
    with pytest.raises(DataError, match=r"index.json not found: write shards with `neumeta-dist shards`"):
        load_splits(_data(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"data.image_size: the images .* vary in size"):
        load_splits(_data(shards, image_size=0))


RANKS_SCRIPT = """
import json, sys
from pathlib import Path
from neumeta_dist.config import load_config
from neumeta_dist.data import load_splits, train_batches
from neumeta_dist.distributed.accelerator import make_accelerator

acc = make_accelerator()
cfg = load_config(None, sys.argv[2:])
data = train_batches(cfg, acc, load_splits(cfg.data, 0).train)
epochs = []
for epoch in range(2):
    keys = []
    for _ in range(data.per_epoch):
        x, y = next(data)
        keys += data.stream.keys
    epochs.append(keys)
faults = data.fault_scalars()  # a collective: sums over ranks
Path(sys.argv[1], f"rank{acc.process_index}.json").write_text(json.dumps({"epochs": epochs, "faults": faults}))
"""


def _two_ranks(tmp_path, budget: float) -> subprocess.CompletedProcess:
    """RANKS_SCRIPT on 2 processes (accelerate launch, gloo) × 2 DataLoader workers, one corrupt JPEG."""
    out = _write(tmp_path, per_class=16, maxcount=7, corrupt="n00/n00_7")
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp_path),
           "data.dataset=shards", f"data.root={out}", "data.image_size=16", "data.batch_size=4",
           "data.num_workers=2", "data.val_shards=index.json#train", "data.test_shards=index.json#train",
           f"data.max_bad_fraction={budget}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_real_ranks_under_accelerate_see_each_sample_once_and_sum_their_fault_counts(tmp_path):
    run = _two_ranks(tmp_path, budget=0.2)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert "corrupt sample train/n00/n00_7" in run.stderr
    for epoch in (0, 1):
        a, b = (r["epochs"][epoch] for r in ranks)
        seen = a + b
        assert len(a) in (23, 24) and len(b) in (23, 24)  # 6 batches of 4 each, one sample short once
        assert len(seen) == len(set(seen)) == 47 and "train/n00/n00_7" not in seen
    assert all(r["faults"]["data/corrupt_samples"] == 2 for r in ranks)  # met once per epoch, summed over ranks


def test_a_rank_over_budget_stops_the_whole_run_with_the_error_instead_of_hanging(tmp_path):
    """One rank meets the corrupt JPEG and raises; its peer must not wait for it forever."""
    run = _two_ranks(tmp_path, budget=0.0)  # subprocess timeout: a hang fails the test
    assert run.returncode != 0
    assert "train/n00/n00_7" in run.stderr and "data.max_bad_fraction=0" in run.stderr
