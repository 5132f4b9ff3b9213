"""Which layers the INR generates, and which channel groups change with the width.

A channel group may shrink only if every layer touching it is generated: a layer kept at
the teacher's weights has a fixed shape.
"""
from __future__ import annotations

from .models.resnet import CLASSES, IMAGE, Layer, ResNetFamily


def generated_layers(family: ResNetFamily, which: str) -> tuple[Layer, ...]:
    """`all`: every conv and linear; `last_block`: the last residual block (NeuMeta's setting)."""
    if which == "all":
        return family.layers
    if which == "last_block":
        last = family.blocks[-1]
        return last.convs + ((last.shortcut,) if last.shortcut else ())
    raise ValueError(f"meta.generated={which!r} is not allowed (allowed: all, last_block)")


def metamorphic_groups(family: ResNetFamily, generated: tuple[Layer, ...], scale: str) -> frozenset[str]:
    """Groups that follow the sampled width: `inner` = hidden widths of blocks, `all` = + streams."""
    names = {l.name for l in generated}
    touching: dict[str, list[Layer]] = {}
    for layer in family.layers:
        touching.setdefault(layer.in_group, []).append(layer)
        touching.setdefault(layer.out_group, []).append(layer)
    inner = {g for b in family.blocks for g in family.inner_groups(b)}
    candidates = inner if scale == "inner" else set(touching) - {IMAGE, CLASSES}
    return frozenset(g for g in candidates if all(l.name in names for l in touching[g]))
