"""What a width costs — parameters and multiply-accumulates (MACs) per image — and the widest
width within a budget (`neumeta-dist export --max-params N --max-macs M`).

Widths are searched on a grid of `STEP`: a width decides the network only through its rounded
channel counts, so a finer grid would find no other network, and both costs only grow with
the width, so a bisection finds the widest width that fits. Every width of a plateau (same
channel counts) is the same generated network: `same_network` reports the plateau, and the
accuracy of any evaluated width on it is the accuracy of the chosen one.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property

from ..models.family import Family, layer_areas, mac_count, parameter_count

STEP = 0.001


@dataclass(frozen=True)
class WidthCost:
    """Parameters and MACs of the network at each width: `groups` are the channel groups the
    width scales (MetamorphicNet.groups), `image_size` the side of the images it is fed."""

    family: Family
    groups: frozenset[str]
    image_size: int

    @classmethod
    def of(cls, net, image_size: int) -> "WidthCost":
        return cls(net.family, frozenset(net.groups), image_size)

    @cached_property
    def areas(self) -> dict[str, int]:
        return layer_areas(self.family, self.image_size)

    def sizes(self, width: float) -> dict[str, int]:
        return self.family.sizes(width, self.groups)

    def params(self, width: float) -> int:
        return parameter_count(self.family, self.sizes(width))

    def macs(self, width: float) -> int:
        return mac_count(self.family, self.sizes(width), self.areas)

    def fits(self, width: float, max_params: int = 0, max_macs: int = 0) -> bool:
        """Within both budgets (0: no limit)."""
        return ((not max_params or self.params(width) <= max_params)
                and (not max_macs or self.macs(width) <= max_macs))

    def widest(self, max_params: int = 0, max_macs: int = 0) -> float:
        """The widest grid width in (0, 1] within the budgets; ValueError when none is."""
        grid = [round(i * STEP, 6) for i in range(1, round(1 / STEP) + 1)]
        first_over = bisect.bisect_left(grid, True, key=lambda w: not self.fits(w, max_params, max_macs))
        if first_over == 0:
            w = grid[0]
            raise ValueError(f"no width fits {_budget(max_params, max_macs)}: the narrowest, {w:g}, has "
                             f"{self.params(w):,} parameters and {si(self.macs(w))} MACs (the layers a width "
                             "does not scale keep their size)")
        return grid[first_over - 1]

    def same_network(self, width: float) -> tuple[float, float]:
        """The grid widths that give the same network (channel counts) as `width`: (narrowest, widest)."""
        sizes, lo, hi = self.sizes(width), width, width
        while lo - STEP > 0 and self.sizes(round(lo - STEP, 6)) == sizes:
            lo = round(lo - STEP, 6)
        while hi + STEP <= 1.0 and self.sizes(round(hi + STEP, 6)) == sizes:
            hi = round(hi + STEP, 6)
        return lo, hi

    def describe(self, width: float, kind: str = "", results: dict | None = None, stage: int | None = None) -> str:
        """One line: the width (and its `kind` to training), its cost and — from the run's
        results.json, when it evaluated this network (same stage, a width on the same
        plateau) — its accuracy."""
        lo, hi = self.same_network(width)
        plateau = f", the same network for widths {lo:g}–{hi:g}" if lo != hi else ""
        what = f" ({kind}{plateau})" if kind else f" ({plateau[2:]})" if plateau else ""
        return (f"width {width:g}{what}: {self.params(width):,} parameters, {si(self.macs(width))} MACs per "
                f"{self.image_size}×{self.image_size} image; {self._accuracy(width, results, stage)}")

    def _accuracy(self, width: float, results: dict | None, stage: int | None) -> str:
        if results is None:
            return "accuracy not evaluated (no results.json: run `neumeta-dist eval`)"
        if stage is not None and results.get("stages_completed") != stage:
            return (f"accuracy not evaluated (results.json is of stage {results.get('stages_completed')}, "
                    f"this network of stage {stage})")
        sizes = self.sizes(width)
        rows = [r for r in results["widths"] if self.sizes(r["width"]) == sizes]
        if rows:
            return f"accuracy {rows[0]['accuracy']:.4f} (results.json, width {rows[0]['width']:g})"
        near = sorted(results["widths"], key=lambda r: abs(r["width"] - width))[:2]
        return ("accuracy not evaluated at this width (results.json, nearest: " +
                ", ".join(f"{r['width']:g} → {r['accuracy']:.4f}" for r in sorted(near, key=lambda r: r["width"])) + ")")


def si(n: float) -> str:
    """1814073344 → '1.81 G', 640000 → '640 k', 512 → '512'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:g}"


def _budget(max_params: int, max_macs: int) -> str:
    parts = ([f"{max_params:,} parameters"] if max_params else []) + ([f"{si(max_macs)} MACs"] if max_macs else [])
    return "the budget of " + " and ".join(parts)
