"""How the training loop meets DDP and DeepSpeed: every mode-specific step in one place.

The loop prepares the INR with its optimiser through Accelerate whatever the mode; this
module supplies what Accelerate leaves to the caller:

- **DeepSpeed settings that belong to the experiment, not the launcher**: gradient
  accumulation = `train.widths_per_step` micro-batches, gradient clipping = `train.grad_clip`
  (DeepSpeed clips by global norm inside `engine.step`, so value clipping is refused), and
  `train.precision` — the one source of the precision: the launcher's `--mixed_precision`
  must be `no` or agree — with bf16 as `torch.autocast` with fp32 master weights
  (DeepSpeed's own `bf16` mode would cast the module, its teacher buffers included, and the
  generated weights would then meet fp32 images in the functional forward).
- **Parameters used outside their module's forward** under ZeRO-3: the INR's hidden layers
  and the SkipInit scales live in `ParameterList`/`ParameterDict` containers whose forward is
  never called, so ZeRO-3 would never gather them; they are registered as external
  parameters of the module that reads them.
- **Whole parameters outside the engine's forward** (EMA, logging, validation, `final.pt`):
  `gathered` is a no-op except under ZeRO-3, where it all-gathers the partitions for the
  duration of the block (read-only: every rank leaves it with its own partition unchanged).
- **The frozen teacher** (`train.teacher_mode`): `replicated` — a plain module on every rank
  (its parameters once per rank, no communication); `sharded` — a ZeRO-3 inference engine of
  its own (parameters 1/N per rank, all-gathered layer by layer at each forward), outside
  Accelerate so that it is never part of the INR's checkpoints. The teacher is rebuilt from
  `teacher.pt` at every start, so it needs no checkpoint.

DDP needs no special case: every INR head sits in one stacked tensor, so each micro-batch
gives every INR parameter a gradient (zero for inactive heads); the only parameters a stage
never uses are the SkipInit scales of blocks it does not generate, and the stage freezes
those (`freeze_unused`) instead of paying `find_unused_parameters`' extra graph traversal.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


class ParallelError(RuntimeError):
    pass


def deepspeed_plugin(accelerator):
    return getattr(accelerator.state, "deepspeed_plugin", None)


def zero_stage(accelerator) -> int:
    """0 without DeepSpeed, else the ZeRO stage."""
    plugin = deepspeed_plugin(accelerator)
    return int(plugin.zero_stage) if plugin is not None else 0


def mode(accelerator) -> str:
    """'zero<k>', 'ddp' or 'single': recorded in checkpoints and benchmark rows."""
    if deepspeed_plugin(accelerator) is not None:
        return f"zero{zero_stage(accelerator)}"
    return "ddp" if accelerator.num_processes > 1 else "single"


def check_precision(accelerator, precision: str) -> None:
    """`train.precision` decides the step's precision (training/execution.py's autocast, and DeepSpeed's
    below); the launcher's `--mixed_precision` must be `no` (it then yields) or say the same."""
    if accelerator.mixed_precision not in ("no", precision):
        raise ParallelError(f"accelerate's mixed_precision={accelerator.mixed_precision} disagrees with "
                            f"train.precision={precision}: train.precision decides, so launch with "
                            f"--mixed_precision no")


def configure(accelerator, micro_batches: int, grad_clip: float, clip_mode: str, batch_size: int,
              precision: str = "fp32") -> None:
    """Per-stage settings before `prepare`: micro-batch size, accumulation, clipping and
    precision (`train.precision`: check_precision).

    The data pipeline is not an Accelerate loader (data/loaders.py), so DeepSpeed's "auto"
    micro-batch size cannot be inferred from one: it is set here from `data.batch_size`.
    """
    check_precision(accelerator, precision)
    accelerator.free_memory()  # forget the models of earlier stages (and the teacher's fit)
    accelerator.gradient_accumulation_steps = micro_batches
    plugin = deepspeed_plugin(accelerator)
    if plugin is None:
        return
    if grad_clip > 0 and clip_mode != "norm":
        raise ParallelError("DeepSpeed clips gradients by global norm only: set train.clip_mode=norm "
                            "(or train.grad_clip=0 to disable clipping)")
    ds = plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = batch_size
    ds["gradient_accumulation_steps"] = micro_batches
    ds["gradient_clipping"] = float(grad_clip)
    # DeepSpeed runs its engine's forward under its own autocast setting, switching off any
    # outer one when it has none: without this a bf16 stage trained fp32 under ZeRO
    ds["bf16"] = {"enabled": False}
    ds["torch_autocast"] = {"enabled": precision == "bf16", "dtype": "bfloat16"}


def load_universal(accelerator, on: bool) -> None:
    """Whether the engines `prepare` builds next load DeepSpeed's universal checkpoint format
    (a checkpoint of another world size, distributed/universal.py) or their own shards."""
    plugin = deepspeed_plugin(accelerator)
    if plugin is not None:
        plugin.deepspeed_config["checkpoint"] = {"load_universal": on}


def freeze_unused(model: nn.Module, used: list[nn.Parameter]) -> None:
    """Parameters of `model.alpha` not in `used` stop requiring gradients for this stage."""
    ids = {id(p) for p in used}
    for p in model.alpha.parameters():
        p.requires_grad_(id(p) in ids)


def register_external_parameters(accelerator, model: nn.Module) -> None:
    """ZeRO-3: parameters held by containers (never called) are gathered with their reader."""
    if zero_stage(accelerator) != 3:
        return
    import deepspeed
    for parent in model.modules():
        for child in parent.children():
            if isinstance(child, (nn.ParameterList, nn.ParameterDict)):
                for p in child.parameters():
                    deepspeed.zero.register_external_parameter(parent, p)


def gathered(accelerator, module: nn.Module):
    """Whole parameters of `module` inside the block (ZeRO-3 all-gather), read-only."""
    if zero_stage(accelerator) != 3:
        return contextlib.nullcontext()
    import deepspeed
    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)


def full_state_dict(accelerator, module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter and persistent buffer, whole on every rank."""
    with gathered(accelerator, module):
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def local_numel(module: nn.Module) -> int:
    """Elements of `module`'s parameters this rank stores (its partition under ZeRO-3)."""
    return sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in module.parameters())


def clip(accelerator, net: nn.Module, value: float, clip_mode: str) -> None:
    """Gradient clipping at the accumulation boundary (DeepSpeed does its own in `step`)."""
    if value <= 0 or deepspeed_plugin(accelerator) is not None:
        return
    if clip_mode == "value":
        accelerator.clip_grad_value_(net.parameters(), value)
    else:
        accelerator.clip_grad_norm_(net.parameters(), value)


def prepare_teacher(accelerator, teacher: nn.Module, placement: str, precision: str = "fp32") -> nn.Module:
    """The frozen teacher, replicated or as a ZeRO-3 inference engine (`train.teacher_mode`)
    running at `precision` (`train.precision`)."""
    teacher = teacher.eval().requires_grad_(False)
    if placement == "replicated":
        return teacher.to(accelerator.device)
    if deepspeed_plugin(accelerator) is None:
        raise ParallelError("train.teacher_mode=sharded needs DeepSpeed: launch with a configs/accelerate/"
                            "zero*.yaml file, or set train.teacher_mode=replicated")
    import deepspeed
    student = deepspeed_plugin(accelerator).deepspeed_config.get("zero_optimization", {})
    zero = {"stage": 3, **{k: student[k] for k in ("stage3_param_persistence_threshold",) if k in student}}
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": zero,
              "torch_autocast": {"enabled": precision == "bf16", "dtype": "bfloat16"}}
    engine = deepspeed.initialize(model=teacher.to(accelerator.device), config=config)[0]
    engine.eval()
    return engine
