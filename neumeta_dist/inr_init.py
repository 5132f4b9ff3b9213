"""INR initialisation: fit heads to the teacher before task losses start.

At full width the target is the smoothed teacher itself. At a fraction f the target is the
teacher *subsampled* along every shrunk channel axis at the positions the coordinates name
(channel o of n ↔ teacher channel ⌊o·N/n⌋), rescaled by N_in/n_in so that each unit sums
about as much input as before (the INR's raw output, weight × fan-in, is the same
quantity at every width). Data-free: it costs INR passes only.
"""
from __future__ import annotations

import torch

from .losses import reconstruction


def subsample_index(n: int, full: int, device=None) -> torch.Tensor:
    return torch.div(torch.arange(n, device=device) * full, n, rounding_mode="floor")


def subsampled_target(net, name: str, fraction: float) -> torch.Tensor:
    layer_name, kind = name.rsplit(".", 1)
    layer = next(l for l in net.generated if l.name == layer_name)
    sizes, full = net.sizes(fraction), net.family.full_sizes()
    t = net.reference(name)
    out_idx = subsample_index(sizes[layer.out_group], full[layer.out_group], t.device)
    t = t.index_select(0, out_idx)
    if kind == "weight":
        n_in, N_in = sizes[layer.in_group], full[layer.in_group]
        t = t.index_select(1, subsample_index(n_in, N_in, t.device)) * (N_in / n_in)
    return t


def reconstruction_warmup(net, steps: int, lr: float, fractions: list[float], weighting: str = "abs",
                          log=None) -> float:
    """Adam on the reconstruction loss alone, cycling through `fractions`; returns the last error.

    Deterministic and data-free, so every rank does the same work and stays identical.
    """
    if steps <= 0:
        return float("nan")
    opt = torch.optim.Adam(net.inr.parameters(), lr=lr)
    net.train()
    err = float("nan")
    for step in range(steps):
        f = fractions[step % len(fractions)]
        generated = net.generate(f, noise=0.0)
        loss = reconstruction(generated, lambda n: subsampled_target(net, n, f), weighting)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if f == 1.0:
            err = loss.item()
        if log is not None and (step + 1) % 50 == 0:
            log(step + 1, err)
    return err


@torch.no_grad()
def reconstruction_error(net, fraction: float = 1.0) -> float:
    """Plain MSE between generated and (subsampled) teacher weights, noise-free."""
    was = net.training
    net.eval()
    err = reconstruction(net.generate(fraction), lambda n: subsampled_target(net, n, fraction), "none").item()
    net.train(was)
    return err
