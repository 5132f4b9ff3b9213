"""Model selection within a stage: the EMA network that scores best on the held-out split.

The 2025 recipe keeps the best checkpoint of each block (its authors scored full-width
accuracy on the test set); here every `train.select_every` steps the EMA network is scored on
the held-out split (never test) at both ends of the training range, and the stage's result —
what `final.pt` holds and the next stage starts from — is the best-scoring one. The score is
the mean of those accuracies: a metamorphic network is judged at its narrowest width as much
as at its widest.

The best candidate is also written to `best.pt` in the stage directory (atomically), so a
resumed stage keeps comparing against it; the candidate records the config digest, and one
from another config is ignored.
"""
from __future__ import annotations

from pathlib import Path

from .. import checkpoint as ckpt
from ..run import BEST


def score(val: dict[float, float]) -> float:
    return sum(val.values()) / len(val)


class Selection:
    def __init__(self, stage_dir: Path, every: int, digest: str):
        self.path, self.every, self.digest = Path(stage_dir) / BEST, every, digest
        self.best: dict | None = None
        if every and self.path.is_file():
            found = ckpt.load_torch(self.path, "best held-out candidate")
            self.best = found if found.get("config_digest") == digest else None

    def due(self, step: int, total: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == total)

    def offer(self, step: int, val: dict[float, float], result: dict, is_main: bool) -> bool:
        """Keep `result` (model + EMA state) if it scores at least the best so far (ties go to
        the later, longer-trained candidate); returns whether it was kept."""
        if self.best is not None and score(val) < score(self.best["val"]):
            return False
        self.best = {**result, "val": val, "step": step, "config_digest": self.digest}
        if is_main:
            ckpt.atomic_torch_save(self.best, self.path)
        return True

    @staticmethod
    def forget(stage_dir: Path) -> None:
        """A stage started over (`train.resume=none`) must not compare against an old run."""
        (Path(stage_dir) / BEST).unlink(missing_ok=True)
