"""A plain network at one width: generated once, saved, loadable without the INR.

`pt` keeps the family and tensors (`load_exported` rebuilds a `PlainNet`: this package
needed); `torchscript`, `pt2` and `onnx` hold the traced computation itself, so torch
(`torch.jit.load`, `torch.export.load`) or onnxruntime alone runs them. The batch size stays
free; the image size is the one traced (the dataset's).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..checkpoint import atomic_torch_save, load_torch
from ..models.family import Family, apply_layer
from ..models.registry import family_from_dict


class PlainNet(nn.Module):
    """The folded network (conv + bias) at fixed sizes; its forward is the family walker."""

    def __init__(self, family: Family, weights: dict[str, torch.Tensor], alphas: dict[str, float]):
        super().__init__()
        self.family, self.alphas = family, dict(alphas)
        self.weights = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v.detach().clone())
                                         for k, v in weights.items()})

    def _w(self) -> dict[str, torch.Tensor]:
        return {k.replace("__", "."): v for k, v in self.weights.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._w()
        return self.family.forward(x, lambda s, h: apply_layer(s, h, w), lambda b: self.alphas.get(b.name, 1.0))


def materialise(net, weights: dict[str, torch.Tensor]) -> PlainNet:
    """Generated tensors + the fixed ones + α values → one standalone network."""
    full = net.weights(weights)
    tensors = {n: full[n].detach().cpu() for spec in net.family.layers for n in spec.tensor_names()}
    return PlainNet(net.family, tensors, {b: a.item() for b, a in net.alphas().items()})


def save_exported(plain: PlainNet, path: Path, width: float) -> None:
    atomic_torch_save({"family": dataclasses.asdict(plain.family), "width": width, "alphas": plain.alphas,
                       "weights": plain._w()}, path)


def load_exported(path: Path) -> PlainNet:
    art = load_torch(path, "exported network")
    family = family_from_dict(art["family"])  # ResNet or LeNet, from the saved family's name
    return PlainNet(family, art["weights"], art["alphas"]).eval()


def write(plain: PlainNet, path: Path, fmt: str, width: float, example: torch.Tensor) -> str:
    """Save `plain` in `fmt` (a key of FORMATS); returns how to load it."""
    if fmt == "pt":
        save_exported(plain, path, width)
        return "neumeta_dist.evaluation.export.load_exported"
    save_standalone(plain, path, fmt, example)
    return STANDALONE[fmt][1].format(path=repr(str(path)))


def save_standalone(plain: PlainNet, path: Path, fmt: str, example: torch.Tensor) -> None:
    """Write `plain` as `fmt` (a key of STANDALONE), traced on `example`; atomic. `example`
    holds N ≥ 2 images: torch.export specialises a batch of 1 instead of leaving it free."""
    plain = plain.eval().requires_grad_(False)  # inference graphs: no autograd state traced
    path = Path(path)
    tmp = path.with_name(f".tmp.{path.name}")  # the suffix kept: torch.export.save checks it
    try:
        STANDALONE[fmt][0](plain, example, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _torchscript(plain: PlainNet, example: torch.Tensor, path: Path) -> None:
    # TorchScript is deprecated in favour of torch.export (a FutureWarning per call), yet it is
    # still what LibTorch C++ programs load: the format is asked for, so the warning is noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*deprecated")
        torch.jit.save(torch.jit.trace(plain, example), str(path))


def _batch_free() -> tuple[dict, ...]:
    """The first dimension of the (only) input is free: any batch size runs."""
    return ({0: torch.export.Dim("batch")},)


def _pt2(plain: PlainNet, example: torch.Tensor, path: Path) -> None:
    torch.export.save(torch.export.export(plain, (example,), dynamic_shapes=_batch_free()), str(path))


def _onnx(plain: PlainNet, example: torch.Tensor, path: Path) -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx's exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"--format onnx needs the onnx and onnxscript packages ({e}): "
                           "pip install onnx onnxscript") from None
    program = torch.onnx.export(plain, (example,), dynamo=True, dynamic_shapes=_batch_free(),
                                input_names=["images"], output_names=["logits"], verbose=False)
    program.save(str(path))


# format → (writer, how to load it); `pt` is `save_exported`, read back by `load_exported`
STANDALONE: dict[str, tuple[Callable[[PlainNet, torch.Tensor, Path], None], str]] = {
    "torchscript": (_torchscript, "torch.jit.load({path})"),
    "pt2": (_pt2, "torch.export.load({path}).module()"),
    "onnx": (_onnx, "onnxruntime.InferenceSession({path}), input 'images'"),
}
FORMATS = ("pt", *STANDALONE)
