"""How the student replaces batch norm (`meta.norm`): one strategy object, chosen once.

The teacher's BN is folded into its convs; what the generated student does instead is a
property of the strategy, asked where it matters rather than the name being tested there:
- `family_norm`: the norm layers of the family itself ("batch": BN, folded away; "group":
  GroupNorm(1, C), kept in the student with a generated scale and shift — models/family.py);
- `skipinit`: a learned SkipInit scale α on every generated residual branch (core/metamorphic.py);
- `recalibrates`: at evaluation each width is recalibrated on a batch of training images
  (recipe/recalib.py), so evaluation draws a calibration batch; `recalib_fixed` extends it from the
  generated convs to the fixed ones (stem, block 0 of each stage), as a slimmable network
  recalibrates every BN layer: their inputs drift too when the generated branches narrow.

Torch-free: config.py validates `meta.norm` against this table.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Norm:
    name: str
    family_norm: str = "batch"
    skipinit: bool = False
    recalibrates: bool = False
    recalib_fixed: bool = False


NORMS: dict[str, Norm] = {n.name: n for n in (
    Norm("skipinit", skipinit=True),  # fold + SkipInit α
    Norm("fold"),  # plain fold
    Norm("recalib", recalibrates=True),  # fold + per-width recalibration of the generated convs
    Norm("recalib_all", recalibrates=True, recalib_fixed=True),  # ... of every conv
    Norm("groupnorm", family_norm="group"),  # GroupNorm in teacher and student
)}


def norm_strategy(norm: str | Norm) -> Norm:
    """The strategy named by `meta.norm` (a strategy passes through)."""
    if isinstance(norm, Norm):
        return norm
    if norm not in NORMS:
        raise ValueError(f"unknown meta.norm {norm!r} (allowed: {', '.join(NORMS)})")
    return NORMS[norm]
