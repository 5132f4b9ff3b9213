"""Atomic checkpoints and stage markers.

A checkpoint is written under a temporary name and renamed into place only after every file
in it is fsynced, so a reader sees a whole checkpoint or none. `meta.json` is written last
inside it; a directory without a readable one is a truncated checkpoint, skipped with a
warning naming it.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

META = "meta.json"
COMPLETE = "COMPLETE"


class CheckpointError(RuntimeError):
    pass


def fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for f in files:
            with open(Path(root) / f, "rb") as fh:
                os.fsync(fh.fileno())


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_torch(path: Path, what: str) -> Any:
    """torch.load with a one-line error naming the file when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, wrong format, ...
        raise CheckpointError(f"{what} {path} is unreadable ({type(e).__name__}: {e}); "
                              "delete it and re-run the stage that writes it") from None


def save_state(accelerator, stage_dir: Path, step: int, meta: dict, extra: dict[str, Any]) -> Path:
    """accelerator.save_state + extra torch objects + meta.json, all or nothing."""
    final = stage_dir / f"checkpoint_{step:08d}"
    tmp = stage_dir / f".tmp_checkpoint_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        for name, obj in extra.items():
            torch.save(obj, tmp / f"{name}.pt")
        (tmp / META).write_text(json.dumps({**meta, "step": step}))
        fsync_tree(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def read_meta(ckpt: Path) -> dict | None:
    try:
        return json.loads((ckpt / META).read_text())
    except (OSError, ValueError):
        return None


def latest_checkpoint(stage_dir: Path) -> Path | None:
    """Newest complete checkpoint; incomplete ones are reported and skipped."""
    candidates = sorted(stage_dir.glob("checkpoint_*"), reverse=True) if stage_dir.is_dir() else []
    for ckpt in candidates:
        if read_meta(ckpt) is not None:
            return ckpt
        warnings.warn(f"skipping truncated checkpoint {ckpt} (no readable {META}); delete it to silence this")
    return None


def prune(stage_dir: Path, keep: int) -> None:
    complete = [c for c in sorted(stage_dir.glob("checkpoint_*")) if read_meta(c) is not None]
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(stage_dir: Path) -> bool:
    return (stage_dir / COMPLETE).is_file()


def mark_complete(stage_dir: Path, info: dict) -> None:
    atomic_write_text(stage_dir / COMPLETE, json.dumps(info))
