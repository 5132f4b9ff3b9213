"""Data sources: Fashion-MNIST IDX files, CIFAR python-pickle folders, and their errors."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from neumeta_dist.config import DataConfig
from neumeta_dist.data import DataError, load_splits


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fmnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("t10k", 20)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_fashion_mnist_idx_files_load_into_train_val_test(fmnist_dir):
    s = load_splits(DataConfig(dataset="fashion-mnist", root=str(fmnist_dir), val_fraction=0.2), seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (40, 10, 20)
    assert s.in_channels == 1 and s.image_size == 28 and s.num_classes == 10
    x, y = s.test.tensors
    assert x.shape == (20, 1, 28, 28) and y.tolist() == [i % 10 for i in range(20)]
    # normalised with training statistics
    assert abs(s.train.tensors[0].mean().item()) < 0.1


def test_validation_and_final_splits_are_disjoint_and_drawn_by_the_split_seed_not_the_training_seed(fmnist_dir):
    cfg = lambda **kw: DataConfig(dataset="fashion-mnist", root=str(fmnist_dir), val_fraction=0.2,
                                  final_fraction=0.2, **kw)
    ids = lambda part: {tuple(x.flatten()[:40].tolist()) for x in part.tensors[0]}  # the images, not their order
    s = load_splits(cfg(), seed=0)
    assert (len(s.train), len(s.val), len(s.final), len(s.test)) == (30, 10, 10, 20)
    assert not (ids(s.train) & ids(s.val) or ids(s.train) & ids(s.final) or ids(s.val) & ids(s.final))
    # every training seed is scored on the same held-out images; another split seed draws others
    again = load_splits(cfg(), seed=7)
    assert ids(again.val) == ids(s.val) and ids(again.final) == ids(s.final)
    other = load_splits(cfg(split_seed=1), seed=0)
    assert ids(other.val) != ids(s.val)
    # no final fraction: the validation split is the one it always was, and no final split
    plain = load_splits(DataConfig(dataset="fashion-mnist", root=str(fmnist_dir), val_fraction=0.2), seed=0)
    assert plain.final is None and ids(plain.val) == ids(s.val)
    assert s.held_out(["val", "final"]).keys() == {"val", "final"} and plain.held_out(["val", "final"]).keys() == {"val"}


def test_truncated_idx_file_is_a_clear_error_naming_it(fmnist_dir):
    path = fmnist_dir / "t10k-images-idx3-ubyte.gz"
    data = gzip.open(path).read()
    with gzip.open(path, "wb") as fh:
        fh.write(data[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is truncated"):
        load_splits(DataConfig(dataset="fashion-mnist", root=str(fmnist_dir)))


def test_missing_fashion_mnist_names_the_package_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_splits(DataConfig(dataset="fashion-mnist", root=str(tmp_path)))


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_pickle_folder_loads(tmp_path, classes):
    rng = np.random.default_rng(1)
    folder = tmp_path / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir()
    key = b"labels" if classes == 10 else b"fine_labels"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if classes == 10 else ["train", "test"]
    for f in files:
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                         key: list(range(10))}, fh)
    s = load_splits(DataConfig(dataset=f"cifar{classes}", root=str(tmp_path), val_fraction=0.0))
    n_train = 50 if classes == 10 else 10
    assert len(s.train) == n_train and len(s.test) == 10
    assert s.in_channels == 3 and s.image_size == 32 and s.num_classes == classes
    assert s.test.tensors[0].dtype == torch.float32


def test_missing_cifar_batch_names_the_file_and_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match="data_batch_1 is missing"):
        load_splits(DataConfig(dataset="cifar10", root=str(tmp_path)))
