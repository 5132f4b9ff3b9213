"""neumeta-dist: one INR that emits a ResNet at any width, trained under Accelerate.

The library face (api.py), in three lines and with no dataset at hand:

    import neumeta_dist as nd
    run = nd.load("runs/demo")            # a finished run, or a (consolidated/ZeRO) checkpoint
    net = run.network(width=0.6)          # a plain nn.Module: exactly the evaluated network
    run.export("net.onnx", width=0.6)     # or max_params= / max_macs=

plus `run.widths` (every evaluated width: kind and accuracy), `run.params(w)`, `run.macs(w)`,
and `nd.train(config, overrides)` for scripts. Importing the package stays torch-free (the
SLURM login-node tools import `neumeta_dist.run`): the names below load api.py on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .api import Run, WidthResult, load, train

__all__ = ["Run", "WidthResult", "load", "train"]


def __getattr__(name: str):
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'neumeta_dist' has no attribute {name!r}")
