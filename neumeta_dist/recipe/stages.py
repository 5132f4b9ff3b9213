"""The stage plan: which layers the INR generates, in which order they are added, and which
channel groups change with the width.

A *unit* is what a stage adds: a residual block (its branch convs and projection), or the
stem or the classifier when those are generated. The full-network recipe adds units one at a
time from the input side towards the output (the 2025 paper's order): a stage trains the
INR heads of every unit added so far, so the network in stage k is generated up to its k-th
unit and the teacher's (smoothed, folded) weights elsewhere.

Unit sets (`meta.generated`):
- `authors`: blocks 1..n of every stage (block 0, stem and classifier stay the teacher's);
- `blocks`: every residual block;
- `all`: every layer — stem, every block, classifier (our extension; also NeuMeta "all layers");
- `last_block`: the last residual block only (NeuMeta's reference setting).

A channel group may shrink only if every layer touching it is generated: a layer kept at the
teacher's weights has a fixed shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..models.family import CLASSES, IMAGE, Family, Layer

if TYPE_CHECKING:
    from ..config import Config


@dataclass(frozen=True)
class Unit:
    name: str
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class Stage:
    index: int  # 1-based; stage 0 is the teacher
    new: tuple[Unit, ...]  # units this stage adds
    units: tuple[Unit, ...]  # every unit generated in this stage (earlier ones included)

    @property
    def layers(self) -> tuple[Layer, ...]:
        """Generated layers in forward order."""
        return tuple(l for u in self.units for l in u.layers)


def units(family: Family, which: str) -> tuple[Unit, ...]:
    """The metamorphic units of `family` in forward (input → output) order."""
    blocks = [Unit(b.name, b.convs + ((b.shortcut,) if b.shortcut else ())) for b in family.blocks]
    # Every layer in forward order: a block is one unit, any other layer (stem, classifier,
    # a LeNet's convs) a unit of its own.
    block_of = {l.name: u for u in blocks for l in u.layers}
    every = list(dict.fromkeys(block_of.get(l.name) or Unit(l.name, (l,)) for l in family.layers))
    chosen = {
        "all": every,
        "blocks": blocks,
        "authors": [u for u, b in zip(blocks, family.blocks) if b.index >= 1],
        "last_block": blocks[-1:],
    }.get(which)
    if chosen is None:
        raise ValueError(f"meta.generated={which!r} is not allowed (allowed: authors, blocks, all, last_block)")
    if not chosen:
        raise ValueError(f"meta.generated={which!r} selects no layer of {family.name}: use meta.generated=all")
    return tuple(chosen)


def plan(family: Family, which: str, incremental: bool = True, per_stage: int = 1) -> tuple[Stage, ...]:
    """Stages adding `per_stage` units each (input side first); one stage if not incremental."""
    us = units(family, which)
    step = per_stage if incremental else len(us)
    return tuple(Stage(k + 1, us[i:i + step], us[:i + step]) for k, i in enumerate(range(0, len(us), step)))


def stage_plan(cfg: "Config", family: Family) -> tuple[Stage, ...]:
    """The config's plan (meta.generated, recipe.incremental, recipe.units_per_stage)."""
    return plan(family, cfg.meta.generated, cfg.recipe.incremental, cfg.recipe.units_per_stage)


def step_images(cfg: "Config") -> int:
    """Images one optimiser step draws on one process: a micro-batch for each width."""
    return cfg.data.batch_size * cfg.train.widths_per_step


def steps_per_stage(cfg: "Config", n_train: int) -> int:
    """Optimiser steps of one stage: train.max_steps, or train.epochs over the training split."""
    return cfg.train.max_steps or max(1, int(cfg.train.epochs * n_train / step_images(cfg)))


def images_note(cfg: "Config", n_train: int, world: int) -> str | None:
    """What `train.epochs` means on `world` processes, when it is not what it says: the stage's
    steps are counted for one process, each of the `world` draws its own micro-batches, so the
    stage sees `world` × the epochs (None on one process, or with train.max_steps)."""
    if world == 1 or cfg.train.max_steps:
        return None
    steps = steps_per_stage(cfg, n_train)
    epochs = steps * step_images(cfg) * world / n_train
    return (f"train.epochs={cfg.train.epochs:g} counts one process's steps ({steps:,}): on {world} processes the "
            f"stage draws {epochs:.1f} epochs of images; train.epochs={cfg.train.epochs / world:g} keeps "
            f"{cfg.train.epochs:g}")


def generated_layers(family: Family, which: str) -> tuple[Layer, ...]:
    """Every layer the INR generates once the whole plan has run."""
    return tuple(l for u in units(family, which) for l in u.layers)


def predecessor(stage_units: tuple[Unit, ...], unit: Unit) -> Unit | None:
    """The unit added just before `unit` (whose heads the recipe copies), if any."""
    i = stage_units.index(unit)
    return stage_units[i - 1] if i > 0 else None


def matching_layers(src: Unit, dst: Unit) -> list[tuple[Layer, Layer]]:
    """Pairs of layers in the same role (conv1↔conv1, down↔down) and kernel size."""
    role = lambda l: l.name.rsplit(".", 1)[-1]
    by_role = {role(l): l for l in src.layers}
    return [(by_role[role(l)], l) for l in dst.layers if role(l) in by_role and by_role[role(l)].k == l.k]


def metamorphic_groups(family: Family, generated: tuple[Layer, ...], scale: str) -> frozenset[str]:
    """Groups that follow the sampled width: `inner` = the family's `scalable_groups()` (a
    ResNet's block hidden widths, a LeNet's conv widths), `all` = every group but image/classes."""
    names = {l.name for l in generated}
    touching: dict[str, list[Layer]] = {}
    for layer in family.layers:
        touching.setdefault(layer.in_group, []).append(layer)
        touching.setdefault(layer.out_group, []).append(layer)
    candidates = family.scalable_groups() if scale == "inner" else set(touching) - {IMAGE, CLASSES}
    return frozenset(g for g in candidates if all(l.name in names for l in touching[g]))


def describe(family: Family, stages: tuple[Stage, ...], steps_per_stage: int) -> str:
    """The plan as a table: what each stage adds, generates and trains."""
    lines = [f"{family.name}: {len(stages)} stage(s) after the teacher (stage 0), "
             f"{steps_per_stage} optimiser steps each", "",
             "| stage | adds | generated tensors | trained units |", "|---|---|---|---|"]
    for s in stages:
        new = ", ".join(u.name for u in s.new)
        tensors = ", ".join(f"{l.name}.{{weight,bias}}" for u in s.new for l in u.layers)
        lines.append(f"| {s.index} | {new} | {2 * len(s.layers)} ({tensors} new) | {', '.join(u.name for u in s.units)} |")
    return "\n".join(lines)
