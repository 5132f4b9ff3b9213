"""`torch.compile` for functions whose tensor shapes change with the network's width.

`dynamic=True` alone does not give one graph for every width: Dynamo's *duck sizing* gives
sizes that are equal when it traces one symbol (at ResNet-20's full width a block's 16 inner
channels and the stem's 16 outputs), so a width where they differ fails that equality guard
and compiles a new graph — and after `torch._dynamo.config.recompile_limit` (8) of them the
function silently runs eagerly. Traced without duck sizing, every dimension has its own
symbol and one graph serves every width, the batch size too (a partial last batch).

What still makes a graph of its own, by Dynamo's design: the grad mode (a no-grad call —
in-place KD's full-width pass, evaluation — is a second graph, made once), and a size of 0
or 1 (a width with a one-channel group: only the narrowest width of a tiny network).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch


def compile_over_widths(fn: Callable, backend: str | Callable = "inductor") -> Callable:
    """`fn` compiled with every dimension dynamic and no duck sizing (see the module doc)."""
    compiled = torch.compile(fn, dynamic=True, backend=backend)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        # read while Dynamo traces, i.e. inside the call; a traced graph keeps its guards
        with torch.fx.experimental._config.patch(use_duck_shape=False):
            return compiled(*args, **kwargs)
    return call
