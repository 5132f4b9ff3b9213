"""The training process itself: its seeds, its threads, and how it leaves."""
from __future__ import annotations

import os
import random
import sys
from typing import Callable, NoReturn

import numpy as np
import torch


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
