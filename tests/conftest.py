"""Shared builders for the smallest real networks the tests need.

`make_net` is the one place that knows how a MetamorphicNet is put together (mirroring
`neumeta_dist.training.trained.build_net`): if its constructor changes, only this file follows.
"""
from __future__ import annotations

import socket

import pytest
import torch

from neumeta_dist.config import INRConfig
from neumeta_dist.core.metamorphic import MetamorphicNet
from neumeta_dist.models.family import Teacher
from neumeta_dist.models.registry import build_family
from neumeta_dist.recipe.stages import generated_layers


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


class HostWork(torch.utils._python_dispatch.TorchDispatchMode):
    """What a block of code makes the host do that a GPU would make it wait for, or pay a copy
    for, attributed to the first Python frame outside torch that asked for it.

    - `syncs`: reads of device values (`.item()`, `bool()`, `.tolist()`, `allclose`: all
      `_local_scalar_dense`), and ops whose output size depends on values (`nonzero`, boolean
      masks, `unique`, ...): each blocks the host until the GPU has caught up;
    - `host_tensors`: tensors an op made on the CPU, where its inputs are all elsewhere
      (factories: `arange`, `tensor`, `full`, ... with no device): on a GPU each is host work
      and a copy;
    - `uploads`: copies from the CPU to another device, and tensors made on another device
      from Python data (`torch.tensor(list, device=...)`: a copy from pageable memory that
      torch makes below the dispatcher, hence seen one level up, as a torch function).
    Each is a list of (op, "file:line"), the line that asked: the first Python frame outside
    torch's thin API wrappers (`Tensor` methods, `torch.functional`, the dispatch machinery).
    `ours()` keeps those asked for by `neumeta_dist/` code; a library's own algorithm (torch's
    Adam reading its CPU step counter, a clip in Accelerate) is the library's.
    """

    SYNCS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_dim",
             "unique_consecutive", "repeat_interleave", "equal", "is_nonzero", "allclose"}

    def __init__(self):
        super().__init__()
        self.syncs, self.host_tensors, self.uploads, self.ops = [], [], [], 0

    def __enter__(self):
        self._python_data = _PythonData(self.uploads)
        self._python_data.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._python_data.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        name = func._schema.name.split("::")[-1]
        if name in self.SYNCS and not (name == "repeat_interleave" and kwargs.get("output_size") is not None):
            self.syncs.append((name, _asker()))
        inputs = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outputs = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        if any(t.device.type == "cpu" for t in outputs) and all(t.device.type != "cpu" for t in inputs):
            self.host_tensors.append((name, _asker()))
        if name in ("_to_copy", "copy_", "_copy_from") and any(t.device.type == "cpu" for t in inputs) \
                and any(t.device.type != "cpu" for t in outputs):
            self.uploads.append((name, _asker()))
        return out

    @staticmethod
    def ours(found: list) -> list:
        return [f for f in found if "/neumeta_dist/" in f[1]]


class _PythonData(torch.overrides.TorchFunctionMode):
    """Records `torch.tensor`/`torch.as_tensor` of Python data straight onto a non-CPU device."""

    def __init__(self, sink: list):
        super().__init__()
        self.sink = sink

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if func in (torch.tensor, torch.as_tensor) and device is not None and torch.device(device).type != "cpu":
            self.sink.append((func.__name__, _asker()))
        return func(*args, **kwargs)


_TORCH_WRAPPERS = ("/torch/_tensor.py", "/torch/functional.py", "/torch/_ops.py", "/torch/overrides.py",
                   "/torch/utils/_python_dispatch.py", "/torch/utils/_device.py", "/torch/_compile.py",
                   "/torch/_dynamo/eval_frame.py")


def _asker() -> str:
    import sys
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename == __file__
                                 or frame.f_code.co_filename.endswith(_TORCH_WRAPPERS)):
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


# The smallest real run (synthetic data, a one-epoch teacher, one INR stage of two steps,
# a checkpoint after each): what the run-directory tests (safe loading, lineage, results)
# train once per module and copy.
TINY_RUN_CONFIG = "configs/blockwise.yaml"
TINY_RUN = ["data.dataset=synthetic", "data.train_limit=128", "data.test_limit=64", "data.batch_size=32",
            "data.val_fraction=0.25", "model.width=0.25", "teacher.epochs=1", "meta.generated=last_block",
            "meta.norm=fold", "smoothing.two_opt_rounds=1", "inr.hidden=8", "inr.layers=1", "inr.num_freqs=2",
            "train.max_steps=2", "train.save_every=1", "train.keep_checkpoints=2", "train.widths_per_step=1",
            "train.warmup_fraction=0", "recipe.warmup_steps=0", "eval.widths=[1.0]"]


def train_tiny_run(run_dir, *overrides: str):
    """Train the tiny run in this process into `run_dir`; returns it."""
    import os
    from pathlib import Path

    from neumeta_dist.config import load_config
    from neumeta_dist.training import pipeline

    os.environ.setdefault("NEUMETA_NO_BAR", "1")
    root = Path(__file__).resolve().parents[1]
    pipeline.run(load_config(root / TINY_RUN_CONFIG, [*TINY_RUN, *overrides, f"run_dir={run_dir}"]))
    return run_dir


def refused_in_one_line(capsys, entry, argv: list[str]) -> str:
    """`entry(argv)` exits non-zero with one `error:` line and no traceback; returns the line."""
    import pytest

    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        entry(argv)
    code = stop.value.code
    err = capsys.readouterr().err + (f"{code}\n" if isinstance(code, str) else "")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None) and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]
