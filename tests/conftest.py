"""Shared builders for the smallest real networks the tests need.

`make_net` is the one place that knows how a MetamorphicNet is put together (mirroring
`neumeta_dist.trained.build_net`): if its constructor changes, only this file follows.
"""
from __future__ import annotations

import socket

import pytest
import torch

from neumeta_dist.config import INRConfig
from neumeta_dist.metamorphic import MetamorphicNet
from neumeta_dist.models import build_family
from neumeta_dist.models.family import Teacher
from neumeta_dist.recipe import generated_layers


def random_bn_teacher(family, seed: int = 0) -> Teacher:
    """An eval-mode teacher whose BN folding is non-trivial (random affine and statistics)."""
    torch.manual_seed(seed)
    teacher = Teacher(family)
    with torch.no_grad():
        for bn in teacher.norms.values():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.3)
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    return teacher.eval()


def make_net(family, generated: str = "all", scale: str = "inner", norm: str = "fold",
             seed: int = 0, nested: bool = False, **inr) -> MetamorphicNet:
    """A small MetamorphicNet over `family` generating the whole `generated` plan at once,
    its reference the folded random-BN teacher. `norm="fold"` keeps every residual branch
    at scale 1 (no SkipInit α), so every generated layer reaches the logits."""
    reference = random_bn_teacher(family, seed).folded()
    planned = generated_layers(family, generated)
    inr_cfg = INRConfig(**{"hidden": 16, "layers": 1, "num_freqs": 4, **inr})
    torch.manual_seed(seed)
    return MetamorphicNet(family, reference, planned, inr_cfg, scale=scale, norm=norm, nested=nested)


@pytest.fixture
def tiny_resnet20():
    """ResNet-20 at width 0.25 (stage channels 4/8/16) on 1-channel images."""
    return build_family("resnet20", 0.25, in_channels=1, num_classes=10)


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread, then restore the count.

    These tensors are tiny: a second thread buys nothing, and on a shared 2-core machine the
    oversubscription makes the tests several times slower. Modules opt in via `pytestmark`.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_image_folder(root, per_class: int, classes: int = 3, seed: int = 0, val: int = 0):
    """ImageNet's layout in miniature: root/train/n0<c>/n0<c>_<i>.JPEG random JPEGs of 32-63 px
    (+ val/ with `val` images per class). Returns the root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", val)):
        for c in range(classes if count else 0):  # no empty class folders: the shard writer refuses them
            folder = root / split / f"n0{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = rng.integers(32, 64, 2)
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"n0{c}_{i}.JPEG", quality=90)
    return root


class deadline:
    """Fail instead of hanging: raises TimeoutError in the main thread after `seconds`."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        import signal

        def fire(*_):
            raise TimeoutError(f"still running after {self.seconds} s: a hang")
        self.previous = signal.signal(signal.SIGALRM, fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        import signal
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


# The two modules that launch the most processes (~45 % of the suite's time), longest first.
# `make test` runs one module per worker (pytest-xdist --dist loadfile --no-loadscope-reorder):
# each worker starts on two modules of the collection order and pulls the next as it ends, so
# with these first neither is the last to begin while the other worker idles.
LONGEST_FIRST = ("test_distributed.py", "test_slurm.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
