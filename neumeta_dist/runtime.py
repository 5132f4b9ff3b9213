"""Process-level plumbing: the Accelerator, seeding, progress bars and TensorBoard scalars."""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch


def make_accelerator(seed: int = 0):
    """One Accelerator for every stage; gloo when there is no GPU.

    Without an explicit gloo backend, Accelerate on CPU counts one process even when
    `accelerate launch` started several (while DeepSpeed sees them all).
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs

    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    handlers = [InitProcessGroupKwargs(backend="gloo")] if multi_cpu else []
    # Several CPU processes (`accelerate launch --multi_gpu`, torchrun) are only MULTI_CPU, so
    # that `prepare` wraps the model in DDP, when `cpu=True`; DeepSpeed takes its own path.
    cpu = multi_cpu and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true"
    # A seedable sampler makes the data order a function of (seed, epoch): resuming needs
    # no sampler state, only the number of batches already consumed.
    return Accelerator(cpu=cpu, kwargs_handlers=handlers, dataloader_config=DataLoaderConfiguration(
        use_seedable_sampler=True, data_seed=seed))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads() -> None:
    """Split the cores between local processes instead of oversubscribing them."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


class Logger:
    """TensorBoard scalars + a tqdm bar, on the main process only; no-ops elsewhere."""

    def __init__(self, accelerator, tb_dir: Path, total: int, desc: str, initial: int = 0):
        self.active = accelerator.is_main_process
        self.writer = self.bar = None
        if self.active:
            from torch.utils.tensorboard import SummaryWriter
            from tqdm.auto import tqdm
            self.writer = SummaryWriter(str(tb_dir))
            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                            disable=os.environ.get("NEUMETA_NO_BAR") == "1")
        self._t, self._n = time.perf_counter(), 0

    def count(self, images: int) -> None:
        self._n += images

    def throughput(self) -> float:
        """Images/s since the last call (and reset)."""
        now = time.perf_counter()
        rate = self._n / max(now - self._t, 1e-9)
        self._t, self._n = now, 0
        return rate

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.active:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def progress(self, step: int, **postfix) -> None:
        """Move the bar to `step` (absolute, so a resumed run starts where it left off)."""
        if self.active:
            self.bar.update(step - self.bar.n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()},
                                     refresh=False)

    def print(self, msg: str) -> None:
        if self.active:
            self.bar.write(msg)

    def close(self) -> None:
        if self.active:
            self.bar.close()
            self.writer.close()
