"""Accuracy, the width sweep, and its outputs: results.json, results.md, the plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from .data import eval_batches
from .report import kind_of


@torch.no_grad()
def accuracy(fn: Callable[[torch.Tensor], torch.Tensor], data, batch_size: int, accelerator=None) -> float:
    """Top-1 of `fn` over every sample once (data.eval_batches splits them over ranks); counts are
    summed over ranks, and samples that could not be read (shards) are left out of both."""
    device = accelerator.device if accelerator else torch.device("cpu")
    counts = torch.zeros(2, device=device, dtype=torch.long)  # correct, scored
    for xb, yb in eval_batches(data, batch_size, accelerator):
        counts += torch.stack([(fn(xb).argmax(1) == yb).sum(), torch.tensor(len(yb), device=device)])
    if accelerator and accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    correct, scored = counts.tolist()
    return correct / max(scored, 1)


@torch.no_grad()
def merged_weights(net, fraction: float, samples: int, noise: float, seed: int = 0) -> dict:
    """The network at `fraction`: noise-free, or the mean of `samples` noisy generations."""
    was = net.training
    if samples <= 1:
        net.eval()
        out = net.generate(fraction)
    else:
        net.train()  # noise is only applied in training mode
        g = torch.Generator(device=net.inr.w_in.device).manual_seed(seed)
        total = None
        for _ in range(samples):
            w = net.generate(fraction, noise, g)
            total = w if total is None else {k: total[k] + w[k] for k in total}
        out = {k: v / samples for k, v in total.items()}
    net.train(was)
    return out


def network_at(net, fraction: float, samples: int, calib_x: torch.Tensor | None = None,
               targets: dict | None = None) -> dict:
    """The generated tensors evaluated and exported at `fraction`: merged samples, then the
    per-width recalibration when `calib_x` (a calibration batch) is given (norms.py);
    `targets` (full-width statistics) can be passed to share them across widths."""
    weights = merged_weights(net, fraction, samples, net.coord_noise)
    if calib_x is None:
        return weights
    from .norms import recalibrate
    return recalibrate(net, fraction, weights, calib_x.to(net.inr.w_in.device), targets)


def sweep(net, widths: list[float], data, batch_size: int, samples: int,
          describe: Callable[[float], dict], accelerator=None, calib_x: torch.Tensor | None = None) -> list[dict]:
    """Accuracy, parameters and compression at each width; `describe(width)` adds what the
    width is to training (widths.TrainingWidths.describe: seen, kind, novel_groups)."""
    full = net.params_at(1.0)
    targets = None
    if calib_x is not None:  # the full-width statistics, computed once for every width
        from .norms import full_width_stats
        calib_x = calib_x.to(net.inr.w_in.device)
        targets = full_width_stats(net, calib_x)
    rows = []
    for w in sorted(widths):
        weights = network_at(net, w, samples, calib_x, targets)
        acc = accuracy(lambda x: net(x, w, weights=weights)[0], data, batch_size, accelerator)
        params = net.params_at(w)
        rows.append({"width": w, **describe(w), "params": params, "compression": 1.0 - params / full,
                     "accuracy": acc})
    return rows


def write_results(run_dir: Path, results: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "results.md").write_text(results_table(results))
    plot(results, run_dir / "accuracy_vs_compression.png")


def results_table(r: dict) -> str:
    t = r["teacher"]
    lines = [f"# {r['dataset']} · {r['model']} · recipe `{r['recipe']}`", "",
             f"Teacher: accuracy {t['accuracy']:.4f}, {t['params']:,} parameters. "
             f"Stages completed: {r['stages_completed']}; generated tensors: {len(r['generated_layers'])}.", "",
             "| width | γ | kind | params | compression | accuracy | Δ teacher |",
             "|---|---|---|---|---|---|---|"]
    for w in r["widths"]:
        lines.append(f"| {w['width']:.3f} | {1.0 - w['width']:.0%} | {kind_of(w)} | "
                     f"{w['params']:,} | {w['compression']:.1%} | {w['accuracy']:.4f} | "
                     f"{w['accuracy'] - t['accuracy']:+.4f} |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    """One run's accuracy-vs-compression plot: the evidence plot (report.py) with one curve."""
    from .report import plot as plot_runs
    plot_runs([r], None, path)
