"""The Accelerator every entry point makes: one launcher config serves GPUs and CPUs."""
from __future__ import annotations

import os

import torch


def make_accelerator():
    """One Accelerator for every stage; gloo when there is no GPU.

    So that one launcher config (configs/accelerate/*.yaml) serves GPUs and CPUs: without an
    explicit gloo backend, Accelerate on CPU counts one process even when `accelerate launch`
    started several (while DeepSpeed sees them all), and a multi-GPU (DDP) config on a machine
    without GPUs runs every process alone unless asked for CPU data parallelism (`cpu=True`;
    DeepSpeed picks its CPU accelerator itself and must not get that flag).
    """
    from accelerate import Accelerator
    from accelerate.utils import (
        DistributedDataParallelKwargs,
        GradientAccumulationPlugin,
        InitProcessGroupKwargs,
    )

    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # DDP would re-broadcast every buffer at each forward: the INR's are the teacher's
    # weights, identical on every rank by construction, so that is pure traffic.
    handlers = [DistributedDataParallelKwargs(broadcast_buffers=False)]
    cpu_parallel = multi and not torch.cuda.is_available()
    if cpu_parallel:
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    # An optimiser step is exactly `train.widths_per_step` micro-batches (training/loop.py; the loops
    # set the count). By default Accelerate also syncs at the last batch of each pass over a
    # prepared DataLoader: when an epoch is not a multiple of the count, every later step's
    # micro-batches were grouped across two steps, and the half-accumulated gradient at a
    # checkpoint was in no file, so a resume after the first epoch end diverged (7e-3 after
    # 8 steps, tests/test_distributed.py). Shard streams never did this; now neither does.
    accumulation = GradientAccumulationPlugin(num_steps=1, sync_with_dataloader=False)
    return Accelerator(cpu=cpu_parallel and not deepspeed, kwargs_handlers=handlers,
                       gradient_accumulation_plugin=accumulation)
