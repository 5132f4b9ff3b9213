"""What each config key decides: the teacher, an INR stage, the evaluation only, or nothing
that a run produces.

A run directory's artefacts are only as true as the keys that made them. Every key of
`Config` is named here exactly once (tests/test_lineage.py fails on a key added to config.py
and not here), so a re-run can tell which artefacts a changed key makes stale:

- `teacher`: stage 0 — teacher.pt and reference.pt (data, model, the teacher's training,
  smoothing, the seed, and the norm strategy, which decides the teacher's layers);
- `stage`: every INR stage (the plan, INR, losses, the stage training); a stage is also made
  by the teacher's keys, so its digest covers both;
- `evaluation`: the width sweep only (results.json and its views): changing one re-evaluates;
- `none`: where the run lives and how it logs, saves and resumes (the config digest of
  checkpoints leaves them out for the same reason).

Torch-free: the lineage check runs before any model code is imported.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

SCOPES = ("teacher", "stage", "evaluation", "none")

_KEYS: dict[str, tuple[str, ...]] = {
    "teacher": (
        # what the teacher trains on (and is scored on: teacher.pt records its test accuracy)
        "data.dataset", "data.root", "data.batch_size", "data.num_workers", "data.val_fraction",
        "data.final_fraction", "data.split_seed",  # they cut the training images
        "data.train_limit", "data.test_limit", "data.shards", "data.val_shards", "data.test_shards", "data.mode",
        "data.batches_per_rank", "data.shuffle_buffer", "data.decode", "data.image_size", "data.min_crop_scale",
        "data.eval_crop",
        "model.family", "model.width", "model.channels",
        "teacher.checkpoint", "teacher.epochs", "teacher.lr", "teacher.momentum", "teacher.weight_decay",
        "teacher.label_smoothing",
        "smoothing.enabled", "smoothing.two_opt_rounds", "smoothing.order",
        "meta.norm",  # the norm strategy decides the family's norm layers, the teacher's included
        "train.seed",
    ),
    "stage": (
        "meta.generated", "meta.scale", "meta.min_width", "meta.max_width", "meta.train_widths",
        "meta.channel_coords", "meta.alpha_init", "meta.train_head",
        "recipe.incremental", "recipe.units_per_stage", "recipe.init", "recipe.warmup_steps", "recipe.warmup_lr",
        "inr.hidden", "inr.layers", "inr.num_freqs", "inr.activation", "inr.residual_scale", "inr.heads",
        "inr.coord_noise", "inr.size_noise",
        "loss.ce", "loss.kd", "loss.kd_temperature", "loss.recon", "loss.recon_weighting", "loss.reg",
        "loss.inplace_kd",
        "train.epochs", "train.max_steps", "train.widths_per_step", "train.sandwich", "train.stage_stream",
        "train.generation", "train.lr", "train.weight_decay", "train.lr_alpha", "train.lr_head",
        "train.shared_weight_decay", "train.warmup_steps", "train.warmup_fraction", "train.schedule",
        "train.grad_clip", "train.clip_mode", "train.ema_decay", "train.select_every", "train.teacher_mode",
        # "none of these changes what is computed beyond rounding" (config.py): rounding is bits
        "train.precision", "train.compile", "train.channels_last",
    ),
    "evaluation": (
        "eval.widths", "eval.samples", "eval.calib_samples", "eval.use_ema", "eval.splits", "eval.calibrate",
        "data.eval_batch_size",
        "data.final_shards",  # a split only evaluation reads (shards: cut when written, not from train)
        "recipe.name",  # the label results.json carries, not a weight
    ),
    "none": (
        "run_dir", "data.download", "data.max_bad_fraction", "teacher.format", "teacher.save_every",
        "train.log_every", "train.save_every", "train.keep_checkpoints", "train.resume", "train.log_with",
        # the slimmable baseline (baselines/slimmable.py) trains its own network in a run of its own,
        # no teacher or INR stage of this one
        "slimmable.init", "slimmable.teacher_kd", "slimmable.batches", "slimmable.budget", "slimmable.lr",
        "slimmable.ema",
    ),
}
SCOPE: dict[str, str] = {key: scope for scope, keys in _KEYS.items() for key in keys}


def flat(cfg) -> dict[str, Any]:
    """Every leaf of a config (a `Config`, or its `to_dict()` as a run recorded it) as
    {"section.key": value}."""
    out: dict[str, Any] = {}

    def walk(obj: dict, prefix: str) -> None:
        for name, value in obj.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}.")
            else:
                out[prefix + name] = list(value) if isinstance(value, (list, tuple)) else value
    walk(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg, "")
    return out


def unclassified(cfg) -> list[str]:
    return [k for k in flat(cfg) if k not in SCOPE]


def keys_of(cfg, artefact: int) -> dict[str, Any]:
    """The keys that make artefact `artefact` (0 = the teacher, k ≥ 1 = INR stage k)."""
    wanted = ("teacher",) if artefact == 0 else ("teacher", "stage")
    return {k: v for k, v in flat(cfg).items() if SCOPE.get(k, "stage") in wanted}


def evaluation_keys(cfg) -> dict[str, Any]:
    return {k: v for k, v in flat(cfg).items() if SCOPE.get(k) == "evaluation"}


def digest(keys: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]
