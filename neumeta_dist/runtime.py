"""Process-level plumbing: the Accelerator, seeding, progress bars and TensorBoard scalars."""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

import numpy as np
import torch


def make_accelerator(seed: int = 0):
    """One Accelerator for every stage; gloo when there is no GPU.

    So that one launcher config (configs/accelerate/*.yaml) serves GPUs and CPUs: without an
    explicit gloo backend, Accelerate on CPU counts one process even when `accelerate launch`
    started several (while DeepSpeed sees them all), and a multi-GPU (DDP) config on a machine
    without GPUs runs every process alone unless asked for CPU data parallelism (`cpu=True`;
    DeepSpeed picks its CPU accelerator itself and must not get that flag).
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, InitProcessGroupKwargs

    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # DDP would re-broadcast every buffer at each forward: the INR's are the teacher's
    # weights, identical on every rank by construction, so that is pure traffic.
    handlers = [DistributedDataParallelKwargs(broadcast_buffers=False)]
    cpu_parallel = multi and not torch.cuda.is_available()
    if cpu_parallel:
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    # A seedable sampler makes the data order a function of (seed, epoch): resuming needs
    # no sampler state, only the number of batches already consumed.
    return Accelerator(cpu=cpu_parallel and not deepspeed, kwargs_handlers=handlers, dataloader_config=DataLoaderConfiguration(
        use_seedable_sampler=True, data_seed=seed))


def exit_skipping_teardown(entry: Callable[[], None]) -> NoReturn:
    """Run `entry`, then end the process with its exit status, skipping Python's teardown.

    Measured (2 gloo processes on a loaded 2-core machine, 2 runs in 56): a rank that had
    finished its stage — COMPLETE written, process group destroyed, files closed — aborted
    during interpreter teardown ("terminate called without an active exception", SIGABRT): a
    C++ thread of torch.distributed reaching for the GIL while the interpreter is torn down.
    The launcher then reports the stage failed and SLURM's afterok chain stops behind it.
    Used by every process entry point (launch/train.py, the `neumeta-dist` command).
    Nothing is left to do at that point, so the process leaves before teardown; an exception
    other than SystemExit still takes the normal path (traceback, status 1).
    """
    try:
        entry()
        status = 0
    except SystemExit as e:
        status = e.code
    if isinstance(status, str):  # SystemExit("error: ...") prints its message, status 1
        print(status, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status if isinstance(status, int) else int(status is not None))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads() -> None:
    """Split the cores between local processes instead of oversubscribing them.

    An explicit OMP_NUM_THREADS wins: several independent runs sharing one machine (a sweep
    on one GPU box) cannot know of each other, and oversubscribed OpenMP threads spin
    (measured: five runs × 16 threads on 16 cores stalled a 1,500-step warm-up for minutes).
    """
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
        return
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
