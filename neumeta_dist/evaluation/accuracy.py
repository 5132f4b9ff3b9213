"""Top-1 accuracy of any network over a split, summed over ranks.

A leaf: the teacher (stage 0), the stage loop and the width sweep all score with it, and
none of them need the others for it.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from ..data import eval_batches


@torch.no_grad()
def accuracy(fn: Callable[[torch.Tensor], torch.Tensor], data, batch_size: int, accelerator=None) -> float:
    """Top-1 of `fn` over every sample once (data.eval_batches splits them over ranks); counts are
    summed over ranks, and samples that could not be read (shards) are left out of both."""
    device = accelerator.device if accelerator else torch.device("cpu")
    counts = torch.zeros(2, device=device, dtype=torch.long)  # correct, scored
    for xb, yb in eval_batches(data, batch_size, accelerator):
        # on the device, read back once at the end: a count per batch would wait for each one
        counts[0] += (fn(xb).argmax(1) == yb).sum()
        counts[1] += len(yb)
    if accelerator and accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    correct, scored = counts.tolist()
    return correct / max(scored, 1)


def by_split(fn: Callable[[torch.Tensor], torch.Tensor], test, held_out: Mapping[str, object], batch_size: int,
             accelerator=None) -> dict[str, float]:
    """Top-1 of `fn` on each named held-out split (`eval.splits`: val, final) and on test."""
    return {name: accuracy(fn, data, batch_size, accelerator) for name, data in {**held_out, "test": test}.items()}
