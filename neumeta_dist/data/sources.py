"""Small image datasets held in memory as normalised tensors: Fashion-MNIST, CIFAR-10/100.

They are small enough (≤ 200 MB as float32) that decoding once and indexing tensors beats any
per-sample pipeline on a 2-core machine. ImageNet goes through WebDataset shards instead.
The training images are cut into train / validation (/ final) by a permutation seeded with
`data.split_seed` — not the training seed, so every seed of a comparison is scored on the same
held-out images — and model selection never sees test.
"""
from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..config import DataConfig

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_HINT = ("install it with `apt-get install dataset-fashion-mnist` (as root), "
                      "or set data.root to a folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")


class DataError(RuntimeError):
    pass


@dataclass
class Splits:
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    final: TensorDataset | None = None  # the evidence protocol's untouched split (data.final_fraction)

    def held_out(self, names) -> dict:
        """The held-out splits `eval.splits` names (val, final) that hold images, by name."""
        parts = {"val": self.val, "final": self.final}
        return {n: parts[n] for n in names if parts[n] is not None and len(parts[n]) > 0}


def load_raw(cfg: DataConfig):
    """((x_train, y_train), (x_test, y_test), classes) as read, images in [0, 1] (shards.py converts these)."""
    loader = {"fashion-mnist": _fashion_mnist, "cifar10": _cifar(10), "cifar100": _cifar(100),
              "synthetic": _synthetic}[cfg.dataset]
    return loader(cfg)


def load_splits(cfg: DataConfig) -> Splits:
    (xtr, ytr), (xte, yte), num_classes = load_raw(cfg)
    xtr, ytr = _limit(xtr, ytr, cfg.train_limit)
    xte, yte = _limit(xte, yte, cfg.test_limit)
    mean = xtr.mean(dim=(0, 2, 3), keepdim=True)
    std = xtr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    order = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(cfg.split_seed))
    n_val, n_final = (int(round(f * len(xtr))) for f in (cfg.val_fraction, cfg.final_fraction))
    val, final, train = order[:n_val], order[n_val:n_val + n_final], order[n_val + n_final:]
    part = lambda idx: TensorDataset(xtr[idx], ytr[idx])
    return Splits(part(train), part(val), TensorDataset(xte, yte), num_classes, xtr.shape[1], xtr.shape[-1],
                  cfg.dataset, part(final) if n_final else None)


def _limit(x, y, n):
    return (x[:n], y[:n]) if n > 0 else (x, y)


def _fashion_mnist(cfg: DataConfig):
    root = Path(cfg.root or FASHION_MNIST_DIR)
    if cfg.download:
        from torchvision.datasets import FashionMNIST
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    folder = next((d for d in (root, root / "FashionMNIST" / "raw") if (d / "t10k-labels-idx1-ubyte.gz").exists()
                   or (d / "t10k-labels-idx1-ubyte").exists()), None)
    if folder is None:
        raise DataError(f"Fashion-MNIST not found in {root}: {FASHION_MNIST_HINT}")
    x_train = _read_idx(folder, "train-images-idx3-ubyte")
    y_train = _read_idx(folder, "train-labels-idx1-ubyte")
    x_test = _read_idx(folder, "t10k-images-idx3-ubyte")
    y_test = _read_idx(folder, "t10k-labels-idx1-ubyte")
    as_images = lambda a: torch.from_numpy(a).float().div_(255).unsqueeze(1)
    as_labels = lambda a: torch.from_numpy(a.astype(np.int64))
    return (as_images(x_train), as_labels(y_train)), (as_images(x_test), as_labels(y_test)), 10


def _read_idx(folder: Path, stem: str) -> np.ndarray:
    """IDX format: magic (2 zero bytes, dtype code, ndim), big-endian dims, then raw data."""
    path = folder / f"{stem}.gz" if (folder / f"{stem}.gz").exists() else folder / stem
    if not path.exists():
        raise DataError(f"{path} is missing: {FASHION_MNIST_HINT}")
    try:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is corrupt ({e}): reinstall the dataset") from None
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated ({body.size} of {int(np.prod(dims))} bytes): reinstall the dataset")
    return body.reshape(dims).copy()  # frombuffer is read-only; torch wants writable memory


def _cifar(classes: int):
    def load(cfg: DataConfig):
        name = "cifar-10-batches-py" if classes == 10 else "cifar-100-python"
        root = Path(cfg.root or "data")
        folder = root / name if (root / name).is_dir() else root
        if cfg.download:
            from torchvision.datasets import CIFAR10, CIFAR100
            (CIFAR10 if classes == 10 else CIFAR100)(str(root), download=True)
            folder = root / name
        files = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if classes == 10 else (["train"], ["test"])
        key = b"labels" if classes == 10 else b"fine_labels"
        return _cifar_part(folder, files[0], key), _cifar_part(folder, files[1], key), classes
    return load


def _cifar_part(folder: Path, files: list[str], key: bytes):
    xs, ys = [], []
    for f in files:
        path = folder / f
        if not path.exists():
            raise DataError(f"{path} is missing: put the python-pickle CIFAR release in {folder} "
                            "(data.root) or set data.download=true where the network allows")
        d = _read_cifar_pickle(path)
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)).float().div_(255), torch.from_numpy(np.concatenate(ys))


# What the official CIFAR python archives hold: dicts and lists of bytes/str/int and numpy
# arrays. Rebuilding an array names these callables; any other global would be code to run.
_CIFAR_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _CifarUnpickler(pickle.Unpickler):
    """Admits only the arrays, lists and dicts of a CIFAR archive: a pickle is a program, and
    one that names anything else (os.system, builtins.open, ...) is refused before it runs."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which no CIFAR archive holds")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return _CifarUnpickler(fh, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path} refused: loading it would run code ({e}); this package reads CIFAR archives "
                        "as data only: use the official python-pickle release") from None


def _synthetic(cfg: DataConfig):
    """Learnable 10-class 1×16×16 images (a class is a template plus noise): for tests only."""
    g = torch.Generator().manual_seed(1234)
    templates = torch.randn(10, 1, 16, 16, generator=g)

    def make(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return templates[y] + 0.8 * torch.randn(n, 1, 16, 16, generator=g), y
    return make(cfg.train_limit or 2048), make(cfg.test_limit or 512), 10
