"""The widths a metamorphic network is trained on, and what an evaluated width is to them.

Training draws its widths from the range [meta.min_width, meta.max_width] — continuously, so
that every integer channel count in it is generated sooner or later — or, with
`meta.train_widths`, from a discrete set of fractions only. The discrete set is what makes
interpolation measurable: neither NeuMeta's nor the 2025 authors' code holds out a width
*inside* its range (both train every integer width of it and call only widths outside it
unseen). A width between two trained ones whose channel counts were never generated is
*held out*.

Each evaluated width gets a `kind`:
- `trained`: a width training drew (continuous: any in the range; discrete: one whose group
  sizes equal those of a trained width — rounding can make two fractions one network),
- `held_out`: inside the range, not trained,
- `outside`: outside the range (extrapolation),
and `novel_groups`: the metamorphic channel groups whose size at that width no trained width
ever had (for a held-out width, which parts of the network are truly new to the INR).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Mapping

EPS = 1e-9
Sizes = Callable[[float], Mapping[str, int]]


@dataclass(frozen=True)
class TrainingWidths:
    low: float
    high: float
    discrete: tuple[float, ...] = ()  # empty: the continuous range

    @classmethod
    def from_config(cls, meta) -> "TrainingWidths":
        return cls(meta.min_width, meta.max_width, tuple(sorted(meta.train_widths)))

    def draw(self, micro: int, sandwich: bool, rng: random.Random) -> float:
        """Micro-batch `micro`'s width: 0 the widest, 1 the narrowest under the sandwich rule,
        the others uniform over the range or the discrete set."""
        if micro == 0:
            return self.high
        if micro == 1 and sandwich:
            return self.low
        return rng.choice(self.discrete) if self.discrete else rng.uniform(self.low, self.high)

    def inside(self, fraction: float) -> bool:
        return self.low - EPS <= fraction <= self.high + EPS

    def kind(self, fraction: float, sizes: Sizes) -> str:
        if not self.inside(fraction):
            return "outside"
        if not self.discrete:
            return "trained"
        at = dict(sizes(fraction))
        return "trained" if any(dict(sizes(t)) == at for t in self.discrete) else "held_out"

    def novel_groups(self, fraction: float, sizes: Sizes, groups) -> list[str]:
        """Metamorphic groups whose size at `fraction` training never generated."""
        at = sizes(fraction)
        if self.discrete:
            trained = [sizes(t) for t in self.discrete]
            return sorted(g for g in groups if all(s[g] != at[g] for s in trained))
        lo, hi = sizes(self.low), sizes(self.high)
        return sorted(g for g in groups if not lo[g] <= at[g] <= hi[g])

    def describe(self, fraction: float, sizes: Sizes, groups) -> dict:
        """The `kind`, `seen` and `novel_groups` fields of a results row."""
        kind = self.kind(fraction, sizes)
        return {"seen": kind == "trained", "kind": kind, "novel_groups": self.novel_groups(fraction, sizes, groups)}
