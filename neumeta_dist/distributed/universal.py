"""ZeRO checkpoints on another number of ranks, through DeepSpeed's universal checkpoint.

A ZeRO-2/3 checkpoint holds each rank's partition of the optimiser state (and, under ZeRO-3,
of the parameters); DeepSpeed loads it only on the world size that wrote it. DeepSpeed's own
tool, `ds_to_universal`, rewrites it as one file per parameter (fp32 weights and Adam moments,
whole), which an engine configured with `checkpoint.load_universal` partitions for its world.

The conversion runs once per checkpoint, on the main process, into `<checkpoint>/universal/`
(temporary name, then rename: a half-written one is never loaded, and a second elastic resume
of the same checkpoint reuses it); it is pruned with its checkpoint.

Two repairs follow the load (`restore_groups`), both of DeepSpeed 0.19's ZeRO-3 loader
(`load_hp_checkpoint_state_from_checkpoint_dir_stage3`). It gives every parameter group the
first group's hyperparameters, while the INR's lr and weight decay differ by group (train.lr,
lr_alpha, lr_head). And it gives every group's state one shared `step` tensor, which AdamW then
advances once per group per step: Adam's bias correction ran ahead (measured: 3e-4 off the DDP
weights two steps later, a tenth of an lr step).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
from pathlib import Path

import torch

from ..checkpoint import CheckpointError

UNIVERSAL = "universal"


def folder(ckpt: Path) -> Path:
    """What `accelerator.load_state` reads for a universal load of `ckpt`."""
    return ckpt / UNIVERSAL


def convert(ckpt: Path) -> Path:
    """`ckpt`'s DeepSpeed shards as a universal checkpoint (made on the first call); main process only."""
    out = folder(ckpt)
    if out.is_dir():
        return out
    tmp = ckpt / f".{UNIVERSAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    from accelerate.utils import MODEL_NAME  # the tag of the shards' folder that accelerate.save_state writes
    args = argparse.Namespace(input_folder=str(ckpt / MODEL_NAME), output_folder=str(tmp / MODEL_NAME),
                              num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)
    try:
        from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal
        with contextlib.redirect_stdout(io.StringIO()):  # one line per parameter otherwise
            ds_to_universal(args)
    except Exception as e:  # any failure of the tool: the checkpoint itself is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{ckpt}: DeepSpeed's ds_to_universal could not convert its ZeRO shards ({why}); "
                             f"resume it on the number of processes that wrote it") from None
    os.replace(tmp, out)
    return out


def hyperparameters(optimizer) -> list[dict]:
    """Each parameter group's settings (all but its parameters), as built from the config."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def restore_groups(optimizer, built: list[dict], lrs: list[float]) -> None:
    """After a universal load: each group's own settings (`built` before it, from the same
    config) and the lr its scheduler restored, instead of the first group's; and a step
    counter of its own for every parameter's state."""
    for group, own, lr in zip(optimizer.param_groups, built, lrs):
        group.update(own, lr=lr)
    for state in optimizer.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()
