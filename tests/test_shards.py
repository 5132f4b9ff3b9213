"""Shard writer: what `neumeta-dist shards` writes reads back as the same images and labels."""
from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder

from neumeta_dist.data.shards import ShardError, in_holdout, read_index, read_samples, write_dataset
from neumeta_dist.data.stream import decode

BIN = Path(sys.executable).parent


def _read_all(out: Path, split: str) -> dict[str, dict[str, bytes]]:
    index = read_index(out / "index.json")
    return {k: f for s in index["splits"][split]["shards"] for k, f in read_samples(out / s["name"])}


def test_imagefolder_round_trip_gives_the_same_bytes_labels_and_pixels(tmp_path):
    src = make_image_folder(tmp_path / "in", per_class=10, val=2)
    index = write_dataset("imagefolder", src, tmp_path / "out", maxcount=7, holdout=0.2)
    assert index["classes"] == ["n00", "n01", "n02"]
    seen = {}
    for split in ("train", "holdout", "test"):
        samples = _read_all(tmp_path / "out", split)
        assert len(samples) == index["splits"][split]["count"]
        seen.update({k: (split, f) for k, f in samples.items()})
    files = sorted((src / "train").glob("*/*.JPEG")) + sorted((src / "val").glob("*/*.JPEG"))
    assert len(seen) == len(files) == 36
    from PIL import Image
    for f in files:
        split, fields = seen[str(f.relative_to(src).with_suffix(""))]
        assert fields["jpg"] == f.read_bytes()  # copied, never re-encoded
        assert int(fields["cls"]) == index["classes"].index(f.parent.name)
        img, label = decode(fields, "torchvision", 3)
        assert np.array_equal(img.permute(1, 2, 0).numpy(), np.asarray(Image.open(f).convert("RGB")))
        assert (split == "test") == (f.parent.parent.name == "val")


def test_holdout_is_cut_by_key_hash_and_never_overlaps_train(tmp_path):
    src = make_image_folder(tmp_path / "in", per_class=20)
    write_dataset("imagefolder", src, tmp_path / "out", maxcount=16, holdout=0.25)
    train, holdout = _read_all(tmp_path / "out", "train"), _read_all(tmp_path / "out", "holdout")
    assert not set(train) & set(holdout) and len(train) + len(holdout) == 60
    assert all(in_holdout(k, 0.25) for k in holdout) and not any(in_holdout(k, 0.25) for k in train)
    assert 5 <= len(holdout) <= 25


def test_shards_are_byte_identical_when_written_again(tmp_path):
    src = make_image_folder(tmp_path / "in", per_class=6)
    a = write_dataset("imagefolder", src, tmp_path / "a", maxcount=5)
    b = write_dataset("imagefolder", src, tmp_path / "b", maxcount=5)
    assert a["splits"] == b["splits"]  # names, counts and SHA-256 of every tar


def test_maxsize_rotates_shards_before_they_grow_past_it(tmp_path):
    src = make_image_folder(tmp_path / "in", per_class=8)
    index = write_dataset("imagefolder", src, tmp_path / "out", maxcount=1000, maxsize=20_000, holdout=0)
    shards = index["splits"]["train"]["shards"]
    assert len(shards) > 1 and all(s["bytes"] <= 20_000 for s in shards[:-1])
    assert sum(s["count"] for s in shards) == 24


def test_fashion_mnist_round_trip_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("t10k", 10)):
        x, y = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), np.arange(n) % 10
        arrays[split] = (x, y)
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
            with gzip.open(tmp_path / f"{split}-{kind}-ubyte.gz", "wb") as fh:
                fh.write(header + a.astype(np.uint8).tobytes())
    index = write_dataset("fashion-mnist", tmp_path, tmp_path / "out", maxcount=8, holdout=0.0)
    assert (index["channels"], index["image_size"]) == (1, 28)
    assert index["mean"][0] == pytest.approx(arrays["train"][0].mean() / 255)
    test = _read_all(tmp_path / "out", "test")
    x, y = arrays["t10k"]
    for i in range(10):
        img, label = decode(test[f"test_{i:07d}"], "pil", 1)
        assert np.array_equal(np.asarray(img), x[i]) and label == y[i]


def test_shards_command_writes_verified_shards_and_index(tmp_path):
    src = make_image_folder(tmp_path / "in", per_class=4, val=1)
    out = subprocess.run([str(BIN / "neumeta-dist"), "shards", "--source", "imagefolder", str(src),
                          "--out", str(tmp_path / "out"), "--maxcount", "5", "--holdout", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "train: 12 samples in 3 shards" in out.stdout and "verified" in out.stdout
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    for s in index["splits"]["train"]["shards"]:
        assert hashlib.sha256((tmp_path / "out" / s["name"]).read_bytes()).hexdigest() == s["sha256"]


def test_a_folder_without_classes_is_a_clear_error(tmp_path):
    (tmp_path / "in" / "train").mkdir(parents=True)
    with pytest.raises(ShardError, match="no class folders"):
        write_dataset("imagefolder", tmp_path / "in", tmp_path / "out")


def test_the_webdataset_library_reads_our_shards_as_we_wrote_them(tmp_path):
    """The tars are plain WebDataset: any WebDataset reader (OpenCLIP's, timm's) gets the same
    keys, bytes and labels from them as our own pipeline."""
    import webdataset as wds
    src = make_image_folder(tmp_path / "in", per_class=5)
    index = write_dataset("imagefolder", src, tmp_path / "out", maxcount=4, holdout=0.0)
    urls = [str(tmp_path / "out" / s["name"]) for s in index["splits"]["train"]["shards"]]
    ours = _read_all(tmp_path / "out", "train")
    theirs = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}
    assert sorted(theirs) == sorted(ours) and len(ours) == 15
    for key, fields in ours.items():
        assert theirs[key]["jpg"] == fields["jpg"] and int(theirs[key]["cls"]) == int(fields["cls"])
