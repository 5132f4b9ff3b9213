"""The width sweep: the network generated at each width (merged noisy samples, recalibrated
when the BN strategy asks for it) and its accuracy; evaluation/results.py writes what it returns."""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from .accuracy import by_split
from .budget import WidthCost


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
    per-width recalibration when `calib_x` (a calibration batch) is given (recipe/recalib.py);
    `targets` (full-width statistics) can be passed to share them across widths."""
    weights = merged_weights(net, fraction, samples, net.coord_noise)
    if calib_x is None:
        return weights
    from ..recipe.recalib import recalibrate
    return recalibrate(net, fraction, weights, calib_x.to(net.inr.w_in.device), targets)


def width_row(width: float, kind: dict, params: int, full_params: int, accuracy: float | dict[str, float],
              macs: int | None = None) -> dict:
    """One row of results.json's `widths` (the schema every sweep writes, baselines included);
    `macs` (per image) is optional: rows written before it existed lack it. `accuracy` is the
    test accuracy, or every split's (`by_split`: val, final, test), test also as `accuracy`."""
    splits = accuracy if isinstance(accuracy, dict) else {"test": accuracy}
    return {"width": width, **kind, "params": params, **({"macs": macs} if macs is not None else {}),
            "compression": 1.0 - params / full_params, "accuracy": splits["test"],
            **({"by_split": splits} if len(splits) > 1 else {})}


def sweep(net, widths: list[float], data, batch_size: int, samples: int,
          describe: Callable[[float], dict], accelerator=None, calib_x: torch.Tensor | None = None,
          image_size: int = 0, held_out: Mapping[str, object] = {},
          weights_at: Callable[[float], dict] | None = None) -> list[dict]:
    """Accuracy on `data` (test) and on each `held_out` split, parameters, compression (and,
    given the side of the images, MACs per image) at each width; `describe(width)` adds what
    the width is to training (widths.TrainingWidths.describe: seen, kind, novel_groups).
    `weights_at(width)`, when given, is the network to score at each width (a run's stored
    networks: evaluation/calibration.py) instead of `network_at` on `calib_x`."""
    full = net.params_at(1.0)
    cost = WidthCost.of(net, image_size) if image_size else None
    targets = None
    if calib_x is not None and weights_at is None:  # the full-width statistics, computed once for every width
        from ..recipe.recalib import full_width_stats
        calib_x = calib_x.to(net.inr.w_in.device)
        targets = full_width_stats(net, calib_x)
    rows = []
    for w in sorted(widths):
        weights = weights_at(w) if weights_at else network_at(net, w, samples, calib_x, targets)
        acc = by_split(lambda x: net(x, w, weights=weights)[0], data, held_out, batch_size, accelerator)
        params = net.params_at(w)
        rows.append(width_row(w, describe(w), params, full, acc, cost.macs(w) if cost else None))
    return rows
