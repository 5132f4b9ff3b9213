"""A finished run's networks without its data: the evaluated network of every width, stored.

A width decides the generated network only through its rounded channel counts, so a run has
finitely many distinct networks (at most one per `budget.STEP` of width). What the evaluation
did to each beyond generating it is data-free (the merged noisy samples use a fixed seed)
except the per-width recalibration (recipe/recalib.py), whose whole dependence on the calibration
images is one affine map (a, c) per recalibrated conv channel. The evaluation computes those
maps once per distinct network — every network of the run (`eval.calibrate: all`) or the
evaluated widths only — stores them with what else a data-free reader needs (stage, merged
samples, image size) in `<run>/calibration.pt`, and evaluates each width *through* the stored
maps. So `Calibration.weights` is by construction the network the evaluation scored, and
`neumeta_dist.load(run).network(w)` needs no dataset.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..checkpoint import atomic_torch_save, load_torch
from ..recipe.recalib import apply_corrections, corrections, full_width_stats
from .budget import STEP
from .sweep import merged_weights

FORMAT = 1


def network_key(sizes: dict[str, int]) -> str:
    """The channel counts that identify one generated network, as a stable string."""
    return ",".join(f"{g}={n}" for g, n in sorted(sizes.items()))


def distinct_widths(net) -> list[float]:
    """One width per distinct network of `net` on the width grid (the narrowest of each
    plateau), leaving out widths that round a channel group to no channel."""
    seen, out = set(), []
    for i in range(1, round(1 / STEP) + 1):
        w = round(i * STEP, 6)
        sizes = net.sizes(w)
        key = network_key(sizes)
        if key not in seen and all(round(w * net.family.full_sizes()[g]) >= 1 for g in net.groups):
            seen.add(key)
            out.append(w)
    return out


class MissingCalibration(RuntimeError):
    """A width whose network the run did not store (an older run, or `eval.calibrate: evaluated`)."""


@dataclass
class Calibration:
    """What turns the INR of stage `stage` into the evaluated network of any stored width."""

    stage: int
    samples: int  # noisy samples merged into each network (eval.samples)
    image_size: int
    in_channels: int
    recalibrates: bool
    source: str = "final"  # the stage's final.pt, or "checkpoint": a consolidated one `eval --ckpt` named
    maps: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)  # key → conv → (a, c)
    format: int = FORMAT

    @classmethod
    @torch.no_grad()
    def measure(cls, net, widths: list[float], stage: int, samples: int, calib_x: torch.Tensor | None,
                image_size: int, in_channels: int, source: str = "final") -> "Calibration":
        """The recalibration of every distinct network among `widths` on `calib_x` (None: the
        strategy does not recalibrate, and nothing is measured)."""
        cal = cls(stage, samples, image_size, in_channels, calib_x is not None, source)
        if calib_x is None:
            return cal
        calib_x = calib_x.to(net.inr.w_in.device)
        targets = full_width_stats(net, calib_x)  # the full-width statistics, once for every width
        for w in widths:
            key = network_key(net.sizes(w))
            if key not in cal.maps:
                generated = merged_weights(net, w, samples, net.coord_noise)
                cal.maps[key] = {n: (a.cpu(), c.cpu()) for n, (a, c) in corrections(net, generated, calib_x, targets).items()}
        return cal

    def covers(self, net, width: float) -> bool:
        return not self.recalibrates or network_key(net.sizes(width)) in self.maps

    @torch.no_grad()
    def weights(self, net, width: float) -> dict[str, torch.Tensor]:
        """The generated tensors the evaluation scored at `width`: merged samples, then the
        stored recalibration; MissingCalibration when this network was not stored."""
        generated = merged_weights(net, width, self.samples, net.coord_noise)
        if not self.recalibrates:
            return generated
        key = network_key(net.sizes(width))
        if key not in self.maps:
            raise MissingCalibration(f"width {width:g} ({key}) has no stored recalibration")
        return apply_corrections(net, generated, self.maps[key])

    def save(self, path: Path) -> None:
        atomic_torch_save(asdict(self), path)

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        fields = load_torch(path, "stored recalibration")
        if fields.get("format") != FORMAT:
            raise ValueError(f"{path}: calibration format {fields.get('format')!r}, this version reads {FORMAT}")
        return cls(**fields)
