"""One plain file from a checkpoint: `neumeta-dist consolidate --ckpt DIR --out FILE`.

A checkpoint holds the INR as Accelerate saved it: one `model.safetensors` under DDP, or one
shard per rank under DeepSpeed ZeRO-2/3 (`pytorch_model/zero_pp_rank_<r>_*`). The output has
the layout of a stage's `final.pt` — `{"model", "ema", "config", "stage", "steps"}`, every
tensor whole, fp32, on the CPU — so `neumeta-dist eval|export --ckpt FILE` and `torch.load`
read it with neither DeepSpeed nor the number of ranks that wrote it. ZeRO shards are merged
offline by DeepSpeed's own `zero_to_fp32` reader (no process group, any machine).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..run import RunDir, stage_index

RESULT_KEYS = ("model", "ema", "stage", "steps")


def model_state(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """The INR's whole fp32 state dict from a checkpoint of any mode."""
    if (ckpt_dir / "latest").is_file():  # DeepSpeed: `latest` names the tag folder of the shards
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        screen_deepspeed(ckpt_dir)
        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir))
    elif (ckpt_dir / "model.safetensors").is_file():
        from safetensors.torch import load_file
        state = load_file(str(ckpt_dir / "model.safetensors"))
    elif (ckpt_dir / "pytorch_model.bin").is_file():
        state = ckpt.load_torch(ckpt_dir / "pytorch_model.bin", "model state")
    else:
        raise ckpt.CheckpointError(f"{ckpt_dir} holds no model state (neither DeepSpeed shards nor "
                                   "model.safetensors): pass a stage_<k>/checkpoint_<step> directory")
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def _deepspeed_types() -> list:
    """The DeepSpeed classes its ZeRO shards hold besides data (an enum, the loss scaler, ZeRO-2's
    (numel, start) records of each parameter's slice of the flat optimiser partition): rebuilt
    from their saved fields, no code of the file's choosing runs."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def screen_deepspeed(ckpt_dir: Path) -> None:
    """DeepSpeed's own reader unpickles without the weights-only guard: every `.pt` under a ZeRO
    checkpoint is first read as data only (memory-mapped), so a file naming other code is
    refused in one line before DeepSpeed opens it."""
    with torch.serialization.safe_globals(_deepspeed_types()):
        for f in sorted(Path(ckpt_dir).rglob("*.pt")):
            ckpt.load_torch(f, "DeepSpeed shard", mmap=True)


def consolidate(ckpt_dir: Path) -> dict:
    """A checkpoint directory → a stage result (the layout of final.pt)."""
    ckpt_dir = Path(ckpt_dir)
    why = ckpt.problem(ckpt_dir) if ckpt_dir.is_dir() else "no such directory"
    if why is not None:
        raise ckpt.CheckpointError(f"cannot consolidate {ckpt_dir}: {why}")
    meta = ckpt.read_meta(ckpt_dir)
    stage = stage_index(ckpt_dir.parent)
    if stage is None:
        raise ckpt.CheckpointError(f"{ckpt_dir} is not inside a stage_<k> directory of a run")
    cfg_path = RunDir.of_checkpoint(ckpt_dir).config
    import yaml
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else None
    return {"model": model_state(ckpt_dir), "ema": ckpt.load_torch(ckpt_dir / "ema.pt", "EMA state"),
            "config": config, "stage": stage, "steps": meta["step"],
            "source": {"checkpoint": str(ckpt_dir), "mode": meta.get("mode"), "world_size": meta.get("world_size")}}


def load_result(path: Path) -> dict:
    """A stage result file (final.pt or consolidated), checked for the keys eval/export read."""
    result = ckpt.load_torch(Path(path), "stage result")
    missing = [k for k in RESULT_KEYS if not isinstance(result, dict) or k not in result]
    if missing:
        raise ckpt.CheckpointError(f"{path} is not a stage result (missing {', '.join(missing)}): pass a "
                                   "stage_<k>/final.pt or a file written by `neumeta-dist consolidate`")
    return {**result, "file": str(Path(path).resolve())}  # which file an evaluation of it evaluated
