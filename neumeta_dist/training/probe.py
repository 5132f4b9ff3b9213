"""Opt-in evidence for the distributed tests: what each rank consumed, what it ended with,
and a real crash at a chosen step. Off unless the environment asks; costs nothing then.

- `NEUMETA_TRACE_DIR=<dir>`: each rank appends one line per micro-batch to
  `<dir>/samples_rank<r>.txt` — `stage step micro <fingerprint>,...` (one short hash of every
  image's bytes) — flushed at once, so a line survives SIGKILL; when the stage has started
  (prepared, resumed) each rank writes `<dir>/start_rank<r>_stage<k>.pt`, its whole
  parameters, and at stage end `<dir>/final_rank<r>_stage<k>.pt`: its whole parameters, its
  EMA and how many parameter elements it stores itself (its ZeRO-3 partition).
- `NEUMETA_SIGKILL_AT_STEP=<n>`: every rank SIGKILLs itself once optimiser step n is done
  (the stage's state after step n is lost unless a checkpoint holds it).
"""
from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from typing import Callable

import torch

TRACE_ENV, KILL_ENV = "NEUMETA_TRACE_DIR", "NEUMETA_SIGKILL_AT_STEP"


def read_trace(folder: Path, rank: int) -> dict[tuple[int, int, int], list[str]]:
    """A rank's trace: (stage, step, micro) → image fingerprints; a step replayed after a crash
    keeps its last record."""
    lines = (Path(folder) / f"samples_rank{rank}.txt").read_text().splitlines()
    return {tuple(map(int, l.split()[:3])): l.split()[3].split(",") for l in lines}


class Callback:
    """What the stage loop reports, as hooks (no-ops here): the loop calls each at one place and
    knows nothing of what listens. `from_env` picks the test probe when the environment asks."""

    def on_batch(self, step: int, micro: int, x: torch.Tensor) -> None:
        pass

    def on_start(self, state: Callable[[], dict]) -> None:
        pass

    def on_step_end(self, done: int) -> None:
        pass

    def on_end(self, state: dict, ema: dict, local_numel: int) -> None:
        pass


def from_env(stage: int, rank: int) -> Callback:
    """The probe when NEUMETA_TRACE_DIR or NEUMETA_SIGKILL_AT_STEP is set, else a no-op."""
    return Probe(stage, rank) if os.environ.get(TRACE_ENV) or os.environ.get(KILL_ENV) else Callback()


class Probe(Callback):
    def __init__(self, stage: int, rank: int):
        self.stage, self.rank = stage, rank
        trace = os.environ.get(TRACE_ENV)
        self.dir = Path(trace) if trace else None
        self.kill_at = int(os.environ.get(KILL_ENV, "0"))
        self._fh = None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.dir / f"samples_rank{rank}.txt", "a", buffering=1)

    def on_batch(self, step: int, micro: int, x: torch.Tensor) -> None:
        if self._fh is None:
            return
        prints = ",".join(hashlib.blake2b(xi.cpu().numpy().tobytes(), digest_size=6).hexdigest() for xi in x)
        self._fh.write(f"{self.stage} {step} {micro} {prints}\n")

    def on_start(self, state: Callable[[], dict]) -> None:
        """`state` is called only when tracing (under ZeRO-3 it is a collective: every rank
        sees the same environment, so every rank calls it or none)."""
        if self.dir is not None:
            torch.save(state(), self.dir / f"start_rank{self.rank}_stage{self.stage}.pt")

    def on_step_end(self, done: int) -> None:
        if done == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_end(self, state: dict, ema: dict, local_numel: int) -> None:
        if self.dir is not None:
            torch.save({"model": state, "ema": ema, "local_numel": local_numel},
                       self.dir / f"final_rank{self.rank}_stage{self.stage}.pt")
        if self._fh is not None:
            self._fh.close()
