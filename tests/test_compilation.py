"""Compiled, the student and the INR trunk make their graphs once: the widths a run samples,
its evaluation and a partial last batch reuse them (core/compilation.py).

Dynamo's frontend decides what recompiles, so the backend here is `aot_eager` (AOTAutograd's
forward and backward tracing, whose guards join the graph's, without Inductor's code
generation: minutes on a CPU). `fail_on_recompile` turns any new graph into an error.
"""
from __future__ import annotations

import pytest
import torch
from conftest import make_net
from torch._dynamo.testing import CompileCounterWithBackend

from neumeta_dist.models.registry import build_family

pytestmark = pytest.mark.usefixtures("one_thread")


# A recompile past the limit is an error here, not a silent eager fallback. Set through torch's
# own `config.patch`: pytest's monkeypatch deletes a config-module key on undo (torch 2.14), and
# every later compile in the process then fails ("recompile_limit does not exist").
@torch._dynamo.config.patch(recompile_limit=64)
def test_six_widths_an_eval_pass_and_a_partial_batch_compile_no_graph_after_the_first_two_widths():
    torch._dynamo.reset()
    family = build_family("lenet", 0.5, in_channels=1)
    net = make_net(family).train()
    graphs = CompileCounterWithBackend("aot_eager")
    net.set_execution("grouped", compile=True, backend=graphs)  # the CUDA bf16 path: grouped trunk
    widths = [1.0, 0.5, 0.8, 0.6, 0.9, 0.7]  # no one-channel group at any of them (asserted below)
    assert all(min(s for g, s in net.sizes(w).items() if g in net.groups) > 1 for w in widths)
    # a batch as large as the full width's channel count (ResNet-18: 128 channels, a batch of
    # 128): duck sizing would tie the two, and every narrower width would fail that guard
    x = torch.randn(net.sizes(1.0)["c1"], 1, 28, 28)

    def micro_batch(width, images):  # as train_step with in-place KD: a no-grad full pass, then the width
        with torch.autocast("cpu", torch.bfloat16):
            with torch.no_grad():
                full = net(images, 1.0)[0]
            logits = net(images, width)[0]
        (logits.float() - full.float()).square().mean().backward()

    for w in widths[:2]:
        micro_batch(w, x)
    warm = graphs.frame_count
    # one graph per compiled function and grad mode: no graph breaks, no graph per width
    assert warm == 4, warm
    with torch.compiler.set_stance("fail_on_recompile"):
        for w in widths[2:]:
            micro_batch(w, x)
        net.eval()
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            for w in widths:
                net(x, w)
            net(x[:3], 0.7)  # the partial last batch
    assert graphs.frame_count == warm
    net.set_execution("auto", False)
