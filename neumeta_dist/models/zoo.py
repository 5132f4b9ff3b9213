"""Teachers from the model zoos: state dicts in torchvision's ResNet layout mapped onto a family.

torchvision's ResNet-18/50 and the common CIFAR zoos (chenyaofo/pytorch-cifar-models,
torchdistill) save the same names: `conv1`/`bn1` (the stem), `layer<s>.<b>.conv<i>`/`bn<i>`
(a block's branch), `layer<s>.<b>.downsample.0`/`.1` (its 1×1-conv projection) and `fc`. Our
families use that topology — BN after every conv, the stride on the 3×3 conv of a
bottleneck, option-B projection shortcuts wherever the stride or width changes — so a zoo
state dict is a renaming of the BN `Teacher`'s, nothing more. What does not rename (option-A
zero-padding shortcuts, another depth or width, another class count) is refused in one line
naming every key that does not fit; the mapping never guesses.

`teacher.checkpoint` names a local file, a URL, or `torchvision:<Weights>` (e.g.
`torchvision:ResNet18_Weights.IMAGENET1K_V1`); `locate` turns the last two into a file in
torch's hub cache (`$TORCH_HOME/hub/checkpoints/`), downloaded once, its SHA-256 checked
against the hash in the file name where the name has one (torchvision's and the CIFAR zoos'
do). A node without internet uses the file already there: fetch it once on a node with
internet (`neumeta-dist config CONFIG --fetch-teacher`) or copy it in by hand.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

import torch

from . import TORCHVISION, is_remote
from .family import Family, Teacher, _key
from .resnet import ResNetFamily

FORMATS = ("neumeta", "torchvision")
_SHOWN = 8  # keys named per kind of mismatch before "… (+N more)": one readable line
_HASH = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's rule: name-<sha256 prefix>.ext


def url_of(spec: str) -> str:
    """The URL a remote spec names; ValueError naming the spec when torchvision has no such weights."""
    if not spec.startswith(TORCHVISION):
        return spec
    import torchvision

    name = spec.removeprefix(TORCHVISION)
    try:
        return torchvision.models.get_weight(name).url
    except (ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"torchvision has no weights {name!r} ({e}): name them as <Enum>.<member>, "
                         "e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1") from None


def cached_path(spec: str) -> Path:
    """Where `locate` keeps a remote spec's file: torch's hub cache, under the URL's file name."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url_of(spec)).path).name


def locate(spec: str) -> Path:
    """The local file of `teacher.checkpoint`: the path itself, or the cached download of a
    remote spec (fetched now if absent; `download_url_to_file` writes a temporary file and
    renames it, so an interrupted download leaves nothing behind). ValueError, one line, when
    the download fails or its hash differs."""
    if not is_remote(spec):
        return Path(spec)
    path = cached_path(spec)
    if path.is_file():
        return path
    url = url_of(spec)
    m = _HASH.search(path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), m.group(1) if m else None, progress=True)
    except Exception as e:  # URLError, HTTPError, the hash check's RuntimeError, ...
        raise ValueError(f"download of {url} failed ({type(e).__name__}: {str(e).strip().splitlines()[0]}); "
                         f"without internet here, put the file at {path} or set teacher.checkpoint to a "
                         "local path") from None
    return path


def checkpoint_format(obj) -> str:
    """"neumeta" (our teacher artefact: state_dict + family) or "torchvision" (a plain state dict
    whose names are torchvision's); ValueError when it is neither."""
    if isinstance(obj, Mapping) and "family" in obj and "state_dict" in obj:
        return "neumeta"
    state = _state_dict(obj)
    if state is not None and any(k in state for k in ("conv1.weight", "fc.weight")):
        return "torchvision"
    raise ValueError("neither a neumeta-dist teacher artefact (state_dict + family) nor a state dict in "
                     "torchvision's ResNet layout (conv1.weight, layer1.0.conv1.weight, …, fc.weight); "
                     "set teacher.format if it is one of them")


def torchvision_names(family: Family) -> dict[str, str]:
    """Our `Teacher` state-dict key → torchvision's, for every tensor of the family."""
    if not isinstance(family, ResNetFamily):
        raise ValueError(f"the torchvision layout exists for the ResNet families only, not {family.name}")
    out = {}
    for spec in family.layers:
        conv, norm = _modules(spec.name)
        out[f"convs.{_key(spec.name)}.weight"] = f"{conv}.weight"
        if spec.is_linear:
            out[f"convs.{_key(spec.name)}.bias"] = f"{conv}.bias"
            continue
        for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"norms.{_key(spec.name)}.{t}"] = f"{norm}.{t}"
    return out


def _modules(layer: str) -> tuple[str, str | None]:
    """torchvision's conv and BN module names of one of our layers."""
    if layer == "stem":
        return "conv1", "bn1"
    if layer == "fc":
        return "fc", None
    block, conv = layer.rsplit(".", 1)  # layer2.0.conv1 / layer2.0.down
    if conv == "down":
        return f"{block}.downsample.0", f"{block}.downsample.1"
    return layer, f"{block}.bn{conv.removeprefix('conv')}"


def from_torchvision(family: Family, obj) -> dict[str, torch.Tensor]:
    """The BN `Teacher` state dict of `family` from a torchvision-layout state dict (float32).

    ValueError, one line, when a key is missing, unexpected or mis-shaped; BN's
    `num_batches_tracked` may be absent (older checkpoints; it changes no output).
    """
    if family.norm != "batch":
        raise ValueError("a torchvision checkpoint has BatchNorm, but meta.norm=groupnorm needs a GroupNorm "
                         "teacher: choose another meta.norm")
    state = _state_dict(obj)
    if state is None:
        raise ValueError("not a state dict (a mapping of names to tensors)")
    names = torchvision_names(family)
    with torch.device("meta"):  # shapes only: a full ResNet-50 template costs nothing
        template = Teacher(family).state_dict()
    want = {names[k]: tuple(v.shape) for k, v in template.items()}
    missing = [k for k in want if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in want]
    misshaped = [f"{k} {tuple(state[k].shape)}≠{want[k]}" for k in want
                 if k in state and tuple(state[k].shape) != want[k]]
    if missing or unexpected or misshaped:
        raise ValueError(_mismatch(family, missing, unexpected, misshaped, state))
    out = {}
    for ours, theirs in names.items():
        t = state.get(theirs, torch.tensor(0))
        out[ours] = t.detach().clone().float() if t.is_floating_point() else t.detach().clone()
    return out


def _state_dict(obj) -> dict[str, torch.Tensor] | None:
    """The tensors of a plain state dict (a `module.` prefix from DataParallel removed), else None."""
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    if all(k.startswith("module.") for k in obj):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def _mismatch(family: ResNetFamily, missing: list[str], unexpected: list[str], misshaped: list[str],
              state: Mapping[str, torch.Tensor]) -> str:
    sizes = family.full_sizes()
    parts = [f"does not fit {family.name} (stage channels {'/'.join(map(str, family.channels))}, "
             f"{family.in_channels} input channels, {family.num_classes} classes, {sizes[family.fc.in_group]} "
             "features into fc: model.* and the dataset set these)"]
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            more = f" … (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
            parts.append(f"{len(keys)} {what}: {', '.join(keys[:_SHOWN])}{more}")
    if any(".downsample." in k for k in missing) and not any(".downsample." in k for k in state):
        parts.append("no downsample weights at all: option-A (zero-padding identity) shortcuts cannot be "
                     "mapped onto this family's 1×1-conv projections; use an option-B checkpoint")
    return "; ".join(parts)
