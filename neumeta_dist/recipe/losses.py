"""Loss terms of a training step: CE + KD + reconstruction + L2 regularisation."""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from ..config import LossConfig


def kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's KD: KL(teacher_T ‖ student_T)·T², so gradients keep their scale as T changes."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    log_target=True, reduction="batchmean") * t * t


def reconstruction(generated: Mapping[str, torch.Tensor], target: Callable[[str], torch.Tensor],
                   weighting: str) -> torch.Tensor:
    """MSE to the teacher's weights over all generated elements; `abs` weights ∝ |w_teacher|.

    Only meaningful at full width, where generated and teacher tensors have equal shapes.
    """
    errs, norms = [], []
    for name, w in generated.items():
        gt = target(name)
        e = (w - gt).pow(2)
        if weighting == "abs":
            e = e * gt.abs() / gt.abs().mean().clamp_min(1e-12)
        errs.append(e.sum())
        norms.append(e.numel())
    return torch.stack(errs).sum() / sum(norms)


def regulariser(generated: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Σ over tensors of ‖W‖₂ (keeps generated weights from drifting large off the data)."""
    return torch.stack([w.norm() for w in generated.values()]).sum()


def step_losses(cfg: LossConfig, logits: torch.Tensor, labels: torch.Tensor,
                generated: Mapping[str, torch.Tensor], target: Callable[[str], torch.Tensor],
                full_width: bool, teacher_logits: torch.Tensor | None = None,
                full_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`full_logits`: the full-width generated network's on the same images (in-place
    distillation, as US-Nets: soft targets at T = 1)."""
    terms = {"ce": F.cross_entropy(logits, labels)}
    if cfg.kd > 0 and teacher_logits is not None:
        terms["kd"] = kd(logits, teacher_logits, cfg.kd_temperature)
    if cfg.inplace_kd > 0 and full_logits is not None:
        terms["inplace_kd"] = kd(logits, full_logits, 1.0)
    if cfg.recon > 0 and full_width:
        terms["recon"] = reconstruction(generated, target, cfg.recon_weighting)
    if cfg.reg > 0:
        terms["reg"] = regulariser(generated)
    weights = {"ce": cfg.ce, "kd": cfg.kd, "recon": cfg.recon, "reg": cfg.reg, "inplace_kd": cfg.inplace_kd}
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms
