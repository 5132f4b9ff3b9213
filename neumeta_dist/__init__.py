"""neumeta-dist: one INR that emits a ResNet at any width, trained under Accelerate.

The library face (api.py), in three lines and with no dataset at hand:

    import neumeta_dist as nd
    run = nd.load("runs/demo")            # a finished run, or a (consolidated/ZeRO) checkpoint
    net = run.network(width=0.6)          # a plain nn.Module: exactly the evaluated network
    run.export("net.onnx", width=0.6)     # or max_params= / max_macs=

plus `run.widths` (every evaluated width: kind and accuracy), `run.params(w)`, `run.macs(w)`,
and `nd.train(config, overrides)` for scripts. Importing the package stays torch-free (the
SLURM login-node tools import `neumeta_dist.run`): api.py loads on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .api import Run, WidthResult

__all__ = ["Run", "WidthResult", "load", "train"]


def load(path: str | Path, overrides: Sequence[str] = ()) -> "Run":
    """A finished run directory (or a checkpoint of one) as a `Run`: `network(width)`, `export`,
    `widths`, `params`, `macs` (api.load)."""
    from .api import load as load_run
    return load_run(path, overrides)


def train(config: str | Path | None, overrides: Sequence[str] = (), stage: int | None = None) -> "Run | None":
    """Run the pipeline of `config` + `key=value` overrides in this process; the evaluated run
    (None while stages remain) (api.train)."""
    from .api import train as train_run
    return train_run(config, overrides, stage)


def __getattr__(name: str):
    if name in ("Run", "WidthResult"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'neumeta_dist' has no attribute {name!r}")
