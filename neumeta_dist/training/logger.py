"""Training progress on the main process: the trackers' scalars (`train.log_with`,
training/tracking.py; TensorBoard by default) and a tqdm bar, and the step logging shared by the
teacher's loop, the stage loop and the baselines'."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable


class Logger:
    """Tracker scalars + a tqdm bar, on the main process only; no-ops elsewhere. `tb_dir` is
    `<run>/tb/<name>`: the loop's name and its run directory for every tracker; `config` (the
    resolved config as a dict) is stored as the trackers' hyper-parameters."""

    def __init__(self, accelerator, tb_dir: Path, total: int, desc: str, initial: int = 0,
                 log_with: str = "tensorboard", config: dict | None = None):
        self.active = accelerator.is_main_process
        self.trackers, self.bar = [], None
        if self.active:
            from tqdm.auto import tqdm

            from .tracking import open_trackers
            self.trackers = open_trackers(log_with, Path(tb_dir).parent.parent, Path(tb_dir).name, config)
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

    def step(self, step: int, values: Callable[[], dict[str, float]], loss_key: str, lr: float,
             faults: dict[str, float], prefix: str = "") -> None:
        """One logged step of a training loop (the teacher's and the stage loop's alike):
        throughput since the last one, then the loop's scalars — `values` reads them back from
        the device only now, and runs on every rank (it may gather) — lr, images/s and the data
        faults; the bar shows `values()[loss_key]`."""
        ips = self.throughput()
        vals = values()
        self.scalars(step, {**vals, f"{prefix}lr": lr, f"{prefix}images_per_s": ips, **faults})
        self.progress(step, loss=vals[loss_key], img_s=ips)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.active:
            from .tracking import log
            log(self.trackers, {k: float(v) for k, v in values.items()}, step)

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
            from .tracking import close
            self.bar.close()
            close(self.trackers)
