"""neumeta_dist.recipe.losses: the in-place distillation term (US-Nets' soft targets, T = 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from neumeta_dist.config import LossConfig
from neumeta_dist.recipe.losses import step_losses


def _terms(cfg, logits, full=None):
    generated = {"w": torch.ones(3)}
    return step_losses(cfg, logits, torch.tensor([0, 1]), generated, lambda n: torch.ones(3), False, None, full)


def test_inplace_term_is_the_kl_to_the_full_widths_soft_predictions():
    logits, full = torch.randn(2, 5), torch.randn(2, 5)
    cfg = LossConfig(inplace_kd=100.0, reg=0.0)
    terms = _terms(cfg, logits, full)
    expected = F.kl_div(F.log_softmax(logits, 1), F.softmax(full, 1), reduction="batchmean")
    assert torch.allclose(terms["inplace_kd"], expected)
    assert torch.allclose(terms["total"], cfg.ce * terms["ce"] + 100.0 * expected)
    assert _terms(cfg, full, full)["inplace_kd"].abs() < 1e-6  # agreeing with the widest costs nothing


def test_inplace_term_is_absent_when_off_or_at_full_width():
    logits = torch.randn(2, 5)
    assert "inplace_kd" not in _terms(LossConfig(), logits, torch.randn(2, 5))
    assert "inplace_kd" not in _terms(LossConfig(inplace_kd=1.0), logits, None)
