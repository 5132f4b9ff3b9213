"""The registry of network families: build one by name, or rebuild one from its saved dict.

Every family speaks one interface (`layers`, `blocks`, `stem`, `fc`, `full_sizes`, `sizes`,
`scalable_groups`, `forward`), so the rest of the package never asks which family it holds;
only construction does, and it lives here.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from . import FAMILIES
from .lenet import LeNetFamily, build_lenet
from .resnet import FAMILIES as RESNETS
from .resnet import ResNetFamily, build_resnet

# name → (family class, builder(name, width, channels, in_channels, num_classes))
REGISTRY: dict[str, tuple[type, Callable]] = {
    **{name: (ResNetFamily, build_resnet) for name in RESNETS},
    "lenet": (LeNetFamily, build_lenet),
}


def register_family(name: str, cls: type, builder: Callable) -> None:
    """Make a family buildable by name (`model.family: <name>` in a config, `build_family`) and
    rebuildable from a saved artefact: `cls` is its frozen dataclass, `builder(name, width,
    channels, in_channels, num_classes)` returns one (docs/families.md)."""
    REGISTRY[name] = (cls, builder)
    if name not in FAMILIES:
        FAMILIES.append(name)


def build_family(name: str, width: float = 1.0, channels: tuple[int, ...] | None = None,
                 in_channels: int = 3, num_classes: int = 10, norm: str = "batch"):
    """`width` multiplies the family's default channels; an explicit `channels` overrides both.
    `norm`: "batch" (BN, folded into the convs) or "group" (GroupNorm kept in the student)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model family {name!r} (allowed: {', '.join(REGISTRY)})")
    if norm not in ("batch", "group"):
        raise ValueError(f"unknown norm {norm!r} (allowed: batch, group)")
    return dataclasses.replace(REGISTRY[name][1](name, width, channels, in_channels, num_classes), norm=norm)


def family_from_dict(fields: dict):
    """Inverse of `dataclasses.asdict(family)`; the class follows from the family's name.

    Keying on the name keeps already-saved artefacts loadable (they store no class).
    """
    if fields.get("name") not in REGISTRY:
        raise ValueError(f"saved family {fields.get('name')!r} is not registered (known: {', '.join(REGISTRY)})")
    cls = REGISTRY[fields["name"]][0]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
