"""Held-out model selection within a stage (training/selection.py): the rule, its persistence, and a real
stage whose result is the best-scoring candidate."""
from __future__ import annotations

import shutil

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_pipeline import run  # noqa: F401
from test_pipeline import train  # noqa: F401  (the module's `run` fixture is imported below)

from neumeta_dist.training.selection import BEST, Selection, score


def _cand(v: float) -> dict:
    return {"model": {"w": torch.tensor([v])}, "ema": {"shadow": {"w": torch.tensor([v])}}}


def test_the_best_score_is_kept_and_ties_go_to_the_later_candidate(tmp_path):
    s = Selection(tmp_path, every=5, digest="d")
    assert s.due(5, 12) and s.due(12, 12) and not s.due(6, 12)
    assert s.offer(5, {0.5: 0.6, 1.0: 0.8}, _cand(1), True)
    assert not s.offer(10, {0.5: 0.5, 1.0: 0.8}, _cand(2), True)
    assert s.offer(12, {0.5: 0.7, 1.0: 0.7}, _cand(3), True)  # same mean, later
    assert s.best["step"] == 12 and s.best["model"]["w"].item() == 3
    assert score(s.best["val"]) == 0.7


def test_a_resumed_stage_compares_against_the_stored_best_of_its_own_config(tmp_path):
    Selection(tmp_path, every=5, digest="d").offer(5, {1.0: 0.9}, _cand(1), True)
    assert (tmp_path / BEST).is_file()
    again = Selection(tmp_path, every=5, digest="d")
    assert again.best["step"] == 5 and not again.offer(10, {1.0: 0.8}, _cand(2), True)
    assert Selection(tmp_path, every=5, digest="other").best is None  # another config's candidate
    Selection.forget(tmp_path)
    assert not (tmp_path / BEST).exists()


def test_the_stage_result_is_the_best_held_out_candidate_and_scores_as_recorded(run, tmp_path):
    """Stage 1 with a check every 4 of 12 steps: final.pt holds the candidate with the best logged
    held-out score, and re-scoring that stored network gives the recorded accuracies."""
    from neumeta_dist import checkpoint as ckpt
    from neumeta_dist.config import load_config
    from neumeta_dist.training.context import RunContext
    from neumeta_dist.training.loop import _validate
    from neumeta_dist.training.trained import selected_network

    sel = tmp_path / "sel"
    shutil.copytree(run / "teacher", sel / "teacher")
    train(sel, "--stage", "1", "train.select_every=4")
    final = torch.load(sel / "stage_1" / "final.pt", weights_only=True)
    ea = EventAccumulator(str(sel / "tb" / "stage_1"))
    ea.Reload()
    logged = {}
    for tag in ("val/accuracy@0.5", "val/accuracy@1"):
        for e in ea.Scalars(tag):
            logged.setdefault(e.step, []).append(e.value)
    assert sorted(logged) == [4, 8, 12]
    best_step = max(sorted(logged), key=lambda s: (sum(logged[s]), s))
    assert final["selected_step"] == best_step
    cfg = load_config(sel / "config.yaml")
    reference = ckpt.load_torch(sel / "teacher" / "reference.pt", "reference")
    ctx = RunContext.load(cfg).with_teacher(None, reference)
    net = selected_network(ctx, final, ctx.stages[0].layers)
    again = _validate(ctx, None, net)
    assert again == final["val"]
    assert abs(sum(again.values()) - sum(logged[best_step])) < 1e-6
