"""The width sweep's outputs in a run directory: results.json, results.md and the plots."""
from __future__ import annotations

import json
from pathlib import Path

from ..run import RunDir
from .budget import si
from .report import kind_of


def write_results(run_dir: Path, results: dict) -> None:
    run = RunDir(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    run.results_json.write_text(json.dumps(results, indent=2))
    run.results_md.write_text(results_table(results))
    plot(results, run.plot)
    if all("macs" in w for w in results["widths"]):
        plot(results, run.plot_macs, x="macs")


def results_table(r: dict) -> str:
    t = r["teacher"]
    lines = [f"# {r['dataset']} · {r['model']} · recipe `{r['recipe']}`", "",
             f"Teacher: accuracy {t['accuracy']:.4f}, {t['params']:,} parameters. "
             f"Stages completed: {r['stages_completed']}; generated tensors: {len(r['generated_layers'])}.", "",
             "| width | γ | kind | params | MACs | compression | accuracy | Δ teacher |",
             "|---|---|---|---|---|---|---|---|"]
    for w in r["widths"]:  # rows written before MACs were recorded show "–"
        macs = si(w["macs"]) if "macs" in w else "–"
        lines.append(f"| {w['width']:.3f} | {1.0 - w['width']:.0%} | {kind_of(w)} | "
                     f"{w['params']:,} | {macs} | {w['compression']:.1%} | {w['accuracy']:.4f} | "
                     f"{w['accuracy'] - t['accuracy']:+.4f} |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path, x: str = "compression") -> None:
    """One run's accuracy-vs-compression (or -MACs) plot: the evidence plot (evaluation/report.py) with one curve."""
    from .report import plot as plot_runs
    plot_runs([r], None, path, x)
