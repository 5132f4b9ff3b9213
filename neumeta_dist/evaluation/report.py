"""The evidence table: several runs' `results.json` (and the individually trained baseline)
side by side, accuracy per width, with the plot — what `docs/results.md` is made from.

`neumeta-dist report --runs DIR [DIR ...] [--individual FILE] --out docs/results.md` also
copies each run's results to `docs/results/<dataset>_<model>_<recipe>.json` beside it.
`--seeds LABEL=DIR,DIR,…` adds a table of one method over several seeds (mean ± spread), the
only way the table can resolve differences smaller than one test set's noise.
"""
from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from ..run import RunDir

MARK = {"trained": "", "held_out": "†", "outside": "*"}


def kind_of(row: dict) -> str:
    """A results row's kind; rows written before `kind` existed knew only seen/unseen."""
    return row.get("kind") or ("trained" if row["seen"] else "outside")


def load_rows(run_dirs: list[Path]) -> list[dict]:
    rows = []
    for d in run_dirs:
        path = RunDir(d).results_json
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `neumeta-dist eval --run {d}` first")
        rows.append(json.loads(path.read_text()))
    return rows


def table(results: list[dict], individual: dict | None, commands: dict[str, str]) -> str:
    widths = sorted({w["width"] for r in results for w in r["widths"]})
    teacher = results[0]["teacher"]
    head = "| method | " + " | ".join(f"w={w:g} (γ={1 - w:.0%})" for w in widths) + " |"
    lines = [f"Teacher (full width, BN): accuracy {teacher['accuracy']:.4f}, {teacher['params']:,} parameters.",
             "Cells: test accuracy; `†` marks widths held out inside the training range (never "
             "trained), `*` widths outside it.", "",
             head, "|" + "---|" * (len(widths) + 1)]
    if individual:
        acc = {w["width"]: w["accuracy"] for w in individual["widths"]}
        lines.append("| individually trained | " + " | ".join(f"{acc[w]:.4f}" if w in acc else "–" for w in widths) + " |")
    for r in results:
        acc = {w["width"]: (w["accuracy"], MARK[kind_of(w)]) for w in r["widths"]}
        cells = [f"{acc[w][0]:.4f}{acc[w][1]}" if w in acc else "–" for w in widths]
        lines.append(f"| {r['recipe']} | " + " | ".join(cells) + " |")
    lines += ["", "| method | stages | generated tensors | wall (min) | commit | command |", "|---|---|---|---|---|---|"]
    for r in results:
        wall = sum((r.get("wall_s") or {}).values())
        lines.append(f"| {r['recipe']} | {r['stages_completed']} | {len(r['generated_layers'])} | "
                     f"{wall / 60:.0f} | {r.get('commit', '')[:7]} | "
                     f"`{commands.get(r['recipe']) or r.get('command', '')}` |")
    return "\n".join(lines) + "\n"


def seed_table(groups: dict[str, list[dict]]) -> str:
    """Each method over its seeds: mean ± sample standard deviation per width (n runs)."""
    widths = sorted({w["width"] for runs in groups.values() for r in runs for w in r["widths"]})
    lines = ["| method (seeds) | " + " | ".join(f"w={w:g}" for w in widths) + " |", "|" + "---|" * (len(widths) + 1)]
    for label, runs in groups.items():
        cells = []
        for w in widths:
            accs = [x["accuracy"] for r in runs for x in r["widths"] if x["width"] == w]
            if not accs:
                cells.append("–")
                continue
            spread = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
            cells.append(f"{statistics.mean(accs):.4f}{spread}")
        seeds = ", ".join(str(r.get("seed", "?")) for r in runs)
        lines.append(f"| {label} ({seeds}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


AXES = {  # plot x axis → (row key, label)
    "compression": ("compression", "parameter compression (1 − params / teacher params)"),
    "macs": ("macs", "multiply-accumulates per image (MACs)"),
}


def plot(results: list[dict], individual: dict | None, path: Path, x: str = "compression") -> None:
    """Accuracy against `x` (an AXES key) for every run (+ the individually trained baseline);
    x=macs needs MACs in every run's rows (an older results.json: re-run `neumeta-dist eval`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    key, label = AXES[x]
    for r in results:
        if any(key not in w for w in r["widths"]):
            raise ValueError(f"the {r['recipe']} results have no {key} per width (written before it was recorded): "
                             "re-run `neumeta-dist eval` on that run")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(results[0]["teacher"]["accuracy"], color="k", ls="--", lw=1, label="teacher")
    if individual and all(key in w for w in individual["widths"]):
        ws = individual["widths"]
        ax.plot([w[key] for w in ws], [w["accuracy"] for w in ws], "k-s", ms=4, label="individually trained")
    for i, r in enumerate(results):
        ws = r["widths"]
        ax.plot([w[key] for w in ws], [w["accuracy"] for w in ws], "-", color=f"C{i}", label=r["recipe"])
        for kind, marker in (("trained", "o"), ("held_out", "D"), ("outside", "x")):
            pts = [w for w in ws if kind_of(w) == kind]
            ax.scatter([w[key] for w in pts], [w["accuracy"] for w in pts], marker=marker,
                       s=16, color=f"C{i}", zorder=3)
    ax.set_xlabel(f"{label}; ● trained, ◆ held out, × outside")
    if x == "macs":
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 450k, 1.8G
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{results[0]['dataset']} · {results[0]['model']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dirs: list[Path], individual: Path | None, out: Path, commands: dict[str, str],
                 x: str = "compression", seeds: dict[str, list[Path]] | None = None) -> str:
    """The table (+ the seed table when `seeds` groups runs by method), the plot beside `out`,
    and every run's JSON copied into `results/` beside it."""
    seeds = seeds or {}
    results = load_rows(run_dirs)
    groups = {label: load_rows(dirs) for label, dirs in seeds.items()}
    ind = json.loads(Path(individual).read_text()) if individual else None
    out.parent.mkdir(parents=True, exist_ok=True)
    store = out.parent / "results"
    store.mkdir(exist_ok=True)
    every = [*zip(run_dirs, results), *((d, r) for label in seeds for d, r in zip(seeds[label], groups[label]))]
    names: dict[str, Path] = {}
    for d, r in every:
        name = f"{r['dataset']}_{r['model']}_{r['recipe']}.json"
        if names.setdefault(name, Path(d)) != Path(d):  # one JSON would overwrite another's
            raise ValueError(f"{d} and {names[name]} are both recipe {r['recipe']!r}: re-run one with its own "
                             "recipe.name (and `neumeta-dist eval`) so that each keeps its JSON")
    for name, d in names.items():
        shutil.copyfile(RunDir(d).results_json, store / name)
    if ind:
        shutil.copyfile(individual, store / f"{ind['dataset']}_{ind['model']}_individual.json")
    suffix = "" if x == "compression" else f"_{x}"
    plot(results, ind, out.parent / f"{results[0]['dataset']}_{results[0]['model']}{suffix}.png", x)
    text = table(results, ind, commands)
    if groups:
        text += "\nOver seeds (test accuracy, mean ± sample standard deviation; the seed changes the INR's " \
                "initial heads, the data order and the widths drawn, not the teacher):\n\n" + seed_table(groups)
    return text
