"""Stop a stage cleanly when the scheduler asks, so that the requeued job resumes from there.

SLURM signals every process of a job before it ends it: SIGTERM on preemption, `scancel` and
`scontrol requeue`, and the `--signal` that Submitit asks for (SIGUSR2, `signal_delay_s`
before the time limit). The handler only records the signal; the step loop asks `requested`
at each step boundary, writes a checkpoint and calls `exit`, and the requeued job resumes
from that checkpoint like from any other. With several processes the flag is max-reduced
over the ranks, so every rank stops at the same step (a save is collective, a rank that
stopped alone would hang the others) — at log steps only: the read-back of the all-reduce
makes the host wait for the GPU, and a log step waits anyway. The grace a scheduler gives
(Submitit's `signal_delay_s`, SLURM's KillWait) must then cover `train.log_every` steps.
"""
from __future__ import annotations

import signal
import threading
from typing import NoReturn

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
EXIT_STATUS = 75  # EX_TEMPFAIL: stopped on request, resumable from the checkpoint just written


class Preemption:
    """The signal received since `watch` (0: none). A context manager: leaving it gives the
    signals back to the handlers they had before, so a script that trains through the API
    (`nd.train`) is still ended by SIGTERM once the stage is over."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    @classmethod
    def watch(cls) -> "Preemption":
        flag = cls()
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            for s in SIGNALS:
                flag._previous[s] = signal.getsignal(s)
                signal.signal(s, flag._record)
        return flag

    def release(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous = {}

    def __enter__(self) -> "Preemption":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _record(self, signum: int, frame) -> None:
        self.signum = self.signum or signum  # the first one says why (SIGUSR2 is followed by SIGTERM)

    def requested(self, accelerator, poll: bool = True) -> bool:
        """True on every rank once any rank was signalled. With several processes, it asks
        the other ranks only where `poll` (an all-reduce read back on the host: the loops
        poll at their log steps, which sync anyway), else says False."""
        if accelerator.num_processes == 1:
            return self.signum != 0
        if not poll:
            return False
        import torch
        import torch.distributed as dist
        flag = torch.tensor([int(self.signum != 0)], device=accelerator.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def exit(self, where: str) -> NoReturn:
        name = signal.Signals(self.signum).name if self.signum else "a signal to another rank"
        print(f"{where}: stopped on {name}, checkpoint written; a requeued job resumes from it", flush=True)
        raise SystemExit(EXIT_STATUS)
