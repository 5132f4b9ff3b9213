"""The evidence protocol's table (docs/protocol.md): every row over its seeds, the paired
differences with Student-t 95 % intervals, the declared endpoints and their verdicts, and the
plot with intervals.

`neumeta-dist report --protocol docs/protocol/results [--split final]` reads the JSONs that
`launch/protocol_seed.sh` keeps — `seed<s>/<row>.json` (INR rows and the slimmable network in
results.json's schema, `individual_0.25.json` in individual.json's) — and writes the page.
A seed contributes to a paired difference only where it has both rows, so a seed still
running never unpairs the others.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

ROWS = ("one_stage", "slimmable", "blockwise", "two_ends")
INDIVIDUAL = "individual_0.25"
# Student-t 0.975 quantiles by degrees of freedom (1..10); beyond, the normal's 1.96 is close enough
# for a table that states n (the protocol's seeds are 3..5).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t975(df: int) -> float:
    return T975[df - 1] if df <= len(T975) else 1.96


@dataclass(frozen=True)
class Interval:
    """Mean of per-seed values with its 95 % Student-t interval (n ≥ 2; n = 1: no interval)."""

    mean: float
    half: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Interval | None":
        if not values:
            return None
        half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
        return cls(statistics.mean(values), half, len(values))

    def verdict(self) -> str:
        """above / below when the interval excludes 0, else level (undecided with one seed)."""
        if self.half is None:
            return "one seed"
        lo, hi = self.mean - self.half, self.mean + self.half
        return "above" if lo > 0 else "below" if hi < 0 else "level"

    def __str__(self) -> str:
        pts = lambda v: f"{100 * v:+.2f}"
        ci = f" [{pts(self.mean - self.half)}, {pts(self.mean + self.half)}]" if self.half is not None else ""
        return f"{pts(self.mean)}{ci} (n={self.n})"


def on_split(row: dict, split: str) -> float | None:
    """A row's accuracy on `split` (`by_split`; a row written before it has test only)."""
    return row.get("by_split", {}).get(split, row["accuracy"] if split == "test" else None)


class Seeds:
    """Every seed's rows: accuracy of a row at a width on one split, per seed."""

    def __init__(self, root: Path, split: str):
        self.split, self.rows = split, {}
        for folder in sorted(Path(root).glob("seed*"), key=lambda p: int(p.name[4:])):
            seed = int(folder.name[4:])
            for path in folder.glob("*.json"):
                self.rows.setdefault(path.stem, {})[seed] = json.loads(path.read_text())

    def seeds(self, row: str) -> list[int]:
        return sorted(self.rows.get(row, {}))

    def acc(self, row: str, seed: int, width: float) -> float | None:
        r = self.rows.get(row, {}).get(seed)
        if r is None:
            return None
        for w in r["widths"]:
            if w["width"] == width:
                return on_split(w, self.split)
        return None

    def teacher(self, seed: int) -> float | None:
        for row in ROWS:
            r = self.rows.get(row, {}).get(seed)
            if r is not None:
                return on_split(r["teacher"], self.split)
        return None

    def widths(self, row: str = "one_stage") -> list[dict]:
        """The widths of a row's first seed, with their kinds."""
        seeds = self.seeds(row)
        return self.rows[row][seeds[0]]["widths"] if seeds else []

    def kinds(self, row: str = "one_stage") -> dict[float, str]:
        return {w["width"]: w.get("kind", "trained") for w in self.widths(row)}

    def values(self, row: str, width: float) -> list[float]:
        out = [self.acc(row, s, width) for s in self.seeds(row)]
        return [v for v in out if v is not None]

    def paired(self, a, b) -> Interval | None:
        """a(seed) − b(seed) over the seeds where both exist; a, b: seed → value or None."""
        diffs = []
        for s in sorted(set(self.all_seeds())):
            x, y = a(s), b(s)
            if x is not None and y is not None:
                diffs.append(x - y)
        return Interval.of(diffs)

    def all_seeds(self) -> list[int]:
        return sorted({s for r in self.rows.values() for s in r})

    def mean_over(self, row: str, widths: list[float]):
        """seed → the row's mean accuracy over `widths` (None if any is missing)."""
        def f(seed):
            vals = [self.acc(row, seed, w) for w in widths]
            return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)
        return f


def _at(seeds: Seeds, row: str, width: float):
    return lambda s: seeds.acc(row, s, width)


def endpoints(seeds: Seeds) -> list[tuple[str, str, Interval | None, str, str]]:
    """(id, what, interval, target, verdict) of P1..P6 (docs/protocol.md §6)."""
    kinds = seeds.kinds()
    trained = [w for w, k in kinds.items() if k == "trained"]
    held = [w for w, k in kinds.items() if k == "held_out"]
    out = []
    teacher = seeds.teacher
    for pid, w, bound in (("P1", 0.75, -0.010), ("P2", 0.5, -0.025)):
        iv = seeds.paired(_at(seeds, "one_stage", w), teacher)
        out.append((pid, f"one_stage − teacher at w={w:g}", iv, f"mean ≥ {100 * bound:+.1f}",
                    _met(iv and iv.mean >= bound)))
    p3 = [(f"w={w:g}", seeds.paired(_at(seeds, "one_stage", w), _at(seeds, "slimmable", w))) for w in sorted(trained)]
    p3.append(("held-out mean", seeds.paired(seeds.mean_over("one_stage", held), seeds.mean_over("slimmable", held))))
    above = sum(iv is not None and iv.verdict() == "above" for _, iv in p3[:-1])
    for label, iv in p3:
        out.append(("P3", f"one_stage − slimmable, {label}", iv, "above (interval > 0)", iv.verdict() if iv else "–"))
    decided = all(iv is not None and iv.half is not None for _, iv in p3)
    out.append(("P3", "verdict", None, "above at ≥ 2 of 3 trained widths and at the held-out mean",
                _met(above >= 2 and p3[-1][1].verdict() == "above") if decided else "undecided (< 2 seeds)"))
    iv = seeds.paired(_at(seeds, "one_stage", 0.25), lambda s: seeds.acc(INDIVIDUAL, s, 0.25))
    out.append(("P4", "one_stage − individual at w=0.25", iv, "mean ≥ −3.0", _met(iv and iv.mean >= -0.03)))
    iv = seeds.paired(seeds.mean_over("blockwise", trained), seeds.mean_over("one_stage", trained))
    rec = ("–" if iv is None else "undecided" if iv.half is None
           else "block-wise" if iv.verdict() == "above" else "one stage")
    out.append(("P5", "blockwise − one_stage, mean over trained widths", iv, "recommend block-wise if > 0",
                "undecided (< 2 seeds)" if rec == "undecided" else f"{iv.verdict() if iv else '–'}: recommend {rec}"))
    for w in sorted(held + [0.75]):
        iv = seeds.paired(_at(seeds, "two_ends", w), _line(seeds, "two_ends", w))
        out.append(("P6", f"two_ends at w={w:g} − line(0.5, 1.0)", iv, "mean ≥ −1.0", _met(iv and iv.mean >= -0.01)))
    return out


def _line(seeds: Seeds, row: str, w: float):
    """seed → the straight line between the row's accuracies at 0.5 and 1.0, at w."""
    def f(s):
        lo, hi = seeds.acc(row, s, 0.5), seeds.acc(row, s, 1.0)
        return None if lo is None or hi is None else lo + (hi - lo) * (w - 0.5) / 0.5
    return f


def _header(first: str, kinds: dict[float, str], *extra: str) -> list[str]:
    """A width table's two header lines: `first`, a column per width (its kind marked), `extra`."""
    mark = {"trained": "", "held_out": "†", "outside": "*"}
    cols = [first, *(f"w={w:g}{mark[kinds[w]]}" for w in sorted(kinds)), *extra]
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def _met(ok) -> str:
    return "–" if ok is None else "met" if ok else "missed"


def table(seeds: Seeds) -> str:
    """Mean ± sd per row and width, then the paired differences and the endpoints."""
    kinds = seeds.kinds()
    widths = sorted(kinds)
    lines = [f"Split: **{seeds.split}**. Cells: accuracy, mean ± sample sd over the seeds in brackets; "
             "† held out inside the training range, * outside it.", "",
             *_header("row (seeds)", kinds)]
    teacher = [t for t in (seeds.teacher(s) for s in seeds.all_seeds()) if t is not None]
    if teacher:
        lines.append(f"| teacher ({len(teacher)}) | " + " | ".join(_cell(teacher) if w == 1.0 else "–" for w in widths) + " |")
    for row in (*ROWS, INDIVIDUAL):
        if not seeds.seeds(row):
            continue
        cells = [_cell(seeds.values(row, w)) for w in widths]
        lines.append(f"| {row} ({','.join(map(str, seeds.seeds(row)))}) | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences (points; mean [95 % Student-t interval] over the seeds that have both):", "",
              *_header("difference", kinds)]
    for a, b in (("one_stage", "slimmable"), ("blockwise", "one_stage"), ("two_ends", "one_stage")):
        cells = [seeds.paired(_at(seeds, a, w), _at(seeds, b, w)) for w in widths]
        lines.append(f"| {a} − {b} | " + " | ".join(str(c) if c else "–" for c in cells) + " |")
    lines += ["", "Endpoints declared in docs/protocol.md §6:", "", "| | endpoint | figure (points) | target | verdict |",
              "|---|---|---|---|---|"]
    for pid, what, iv, target, verdict in endpoints(seeds):
        lines.append(f"| {pid} | {what} | {iv if iv else '–'} | {target} | {verdict} |")
    return "\n".join(lines) + "\n"


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4f}{sd}"


def plot(seeds: Seeds, path: Path) -> None:
    """Accuracy against width, mean with 95 % intervals, for every row: the whole range, and a
    panel zoomed on the trained and held-out widths where the methods differ by tenths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = seeds.kinds()
    widths = sorted(kinds)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    teacher = Interval.of([t for t in (seeds.teacher(s) for s in seeds.all_seeds()) if t is not None])
    inside = [w for w in widths if kinds[w] != "outside"]
    lows = []
    for i, row in enumerate((*ROWS, INDIVIDUAL)):
        pts = [(w, Interval.of(seeds.values(row, w))) for w in widths]
        pts = [(w, iv) for w, iv in pts if iv is not None]
        if not pts:
            continue
        for ax in axes:
            ax.errorbar([w for w, _ in pts], [iv.mean for _, iv in pts], yerr=[iv.half or 0 for _, iv in pts],
                        fmt="-o" if row != INDIVIDUAL else "s", ms=3, capsize=2, color=f"C{i}", label=row)
        lows += [iv.mean - (iv.half or 0) for w, iv in pts if w in inside]
    for ax in axes:
        if teacher:
            ax.axhline(teacher.mean, color="k", ls="--", lw=1, label="teacher")
        for w in widths:
            if kinds[w] == "held_out":
                ax.axvline(w, color="0.85", lw=0.8, zorder=0)
        ax.set_xlabel("width (grey lines: held out)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{seeds.split} accuracy (mean, 95 % interval)")
    axes[0].set_title("every width")
    if lows:
        top = max([teacher.mean if teacher else 0.0] + [iv.mean + (iv.half or 0) for row in ROWS for w in inside
                                                        for iv in [Interval.of(seeds.values(row, w))] if iv])
        axes[1].set_ylim(min(lows) - 0.002, top + 0.002)
        axes[1].set_xlim(min(inside) - 0.02, max(inside) + 0.02)
    axes[1].set_title("trained and held-out widths (zoomed)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def once_table(root: Path, split: str, kinds: dict[float, str]) -> str:
    """The once-only rows (`once/<row>.json`, launch/protocol_once.sh: seed 0), secondary:
    accuracy per width on `split`, and the INR's storage where the row records it."""
    paths = sorted((Path(root) / "once").glob("*.json"))
    if not paths:
        return ""
    widths = sorted(kinds)
    lines = [f"Once (seed 0, secondary; `launch/protocol_once.sh`), split **{split}**; storage: the "
             "parameters an INR row keeps to emit every width (INR + the tensors it does not generate).", "",
             *_header("row", kinds, "storage")]
    for path in paths:
        r = json.loads(path.read_text())
        acc = {w["width"]: on_split(w, split) for w in r["widths"]}
        st = r.get("storage")
        cells = [f"{acc[w]:.4f}" if acc.get(w) is not None else "–" for w in widths]
        lines.append(f"| {path.stem} | " + " | ".join(cells)
                     + (f" | {st['total']:,} ({st['inr']:,} INR) |" if st else " | – |"))
    return "\n".join(lines) + "\n"


def write(root: Path, out: Path, split: str = "final") -> str:
    """The page's generated part (table, differences, endpoints, the once rows) and the plot
    beside `out`."""
    seeds = Seeds(root, split)
    if not seeds.seeds("one_stage"):
        raise FileNotFoundError(f"{root} holds no seed<s>/one_stage.json: run launch/protocol_seed.sh first")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(seeds, out.with_suffix(".png"))
    once = once_table(root, split, seeds.kinds())
    return (table(seeds) + (f"\n{once}" if once else "")
            + f"\n![accuracy against width]({out.with_suffix('.png').name})\n")
