"""INR initialisation: how a stage's new heads start, before task losses.

Strategies (`recipe.init`): `copy` — a new unit's heads start as copies of the heads of the
unit added just before it (a block's weights resemble its neighbour's; the 2025 recipe's
default); `random` — fresh heads; `recon` — fresh heads fitted to the teacher's weights by a
data-free reconstruction warm-up. `recipe.warmup_steps > 0` adds the warm-up to any strategy.

At full width the target is the smoothed teacher itself. At a fraction f the target is the
teacher *subsampled* along every shrunk channel axis at the positions the coordinates name
(channel o of n ↔ teacher channel ⌊o·N/n⌋), rescaled by N_in/n_in so that each unit sums
about as much input as before (the INR's raw output, weight × fan-in, is the same
quantity at every width). Data-free: it costs INR passes only.
"""
from __future__ import annotations

import torch

from .losses import reconstruction
from .stages import Stage, matching_layers, predecessor


def subsample_index(n: int, full: int, device=None, nested: bool = False) -> torch.Tensor:
    """The full-width channel that channel i of n stands for: at the same relative position,
    or — nested coordinates — the same channel (the leading n)."""
    if nested:
        return torch.arange(n, device=device)
    return torch.div(torch.arange(n, device=device) * full, n, rounding_mode="floor")


def subsampled_target(net, name: str, fraction: float) -> torch.Tensor:
    layer_name, kind = name.rsplit(".", 1)
    layer = next(l for l in net.generated if l.name == layer_name)
    sizes, full = net.sizes(fraction), net.family.full_sizes()
    t = net.reference(name)
    out_idx = subsample_index(sizes[layer.out_group], full[layer.out_group], t.device, net.nested)
    t = t.index_select(0, out_idx)
    if kind == "weight":
        n_in, N_in = sizes[layer.in_group], full[layer.in_group]
        t = t.index_select(1, subsample_index(n_in, N_in, t.device, net.nested)) * (N_in / n_in)
    return t


def initialise_stage(net, stage: Stage, strategy: str, seed: int) -> list[str]:
    """Set the heads of the units `stage` adds; returns the names of their tensors.

    Random re-initialisation draws from a generator seeded by (seed, stage), so every rank
    produces the same heads without communication.
    """
    gen = torch.Generator().manual_seed(seed * 1000 + stage.index)
    tensors = lambda u: [n for l in u.layers for n in l.tensor_names()]
    # A head shared with an earlier unit (inr.heads=shared) is already trained: leave it.
    trained = {net.head_of(n) for u in stage.units if u not in stage.new for n in tensors(u)}
    new = []
    for unit in stage.new:
        names = tensors(unit)
        new += names
        fresh = [net.head_of(n) for n in names if net.head_of(n) not in trained]
        for h in fresh:
            net.inr.reset_head(h, gen)
        src = predecessor(stage.units, unit) if strategy == "copy" else None
        if src is None:
            continue
        for a, b in matching_layers(src, unit):
            for k in b.tensors:
                if net.head_of(f"{b.name}.{k}") in fresh:
                    net.inr.copy_head(net.head_of(f"{a.name}.{k}"), net.head_of(f"{b.name}.{k}"))
    return new


def reconstruction_warmup(net, steps: int, lr: float, fractions: list[float], weighting: str = "abs",
                          log=None, names: list[str] | None = None) -> float:
    """Adam on the reconstruction loss alone, cycling through `fractions`; returns the last error.

    `names` restricts the fit to some tensors (a stage's new ones): only their heads are
    optimised (`MetamorphicNet.only_heads`), every other head is left exactly as it was.
    Deterministic and data-free, so every rank does the same work and stays identical.
    """
    if steps <= 0:
        return float("nan")
    names = names if names is not None else net.generated_names()
    layers = _layers_of(net, names)
    net.train()
    last = None  # the latest full-width loss, on the device: read back only to log and return it
    with net.only_heads(names) as inr:
        opt = torch.optim.Adam(inr.parameters(), lr=lr)
        for step in range(steps):
            f = fractions[step % len(fractions)]
            generated = net.generate(f, noise=0.0, layers=layers)
            loss = reconstruction({n: generated[n] for n in names}, lambda n: subsampled_target(net, n, f), weighting)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if f == 1.0:
                last = loss.detach()
            if log is not None and (step + 1) % 50 == 0:
                log(step + 1, float("nan") if last is None else last.item())
    return float("nan") if last is None else last.item()


def _layers_of(net, names: list[str] | None):
    """The active layers holding `names` (None: all active): generate only what is fitted."""
    if names is None:
        return None
    owners = {n.rsplit(".", 1)[0] for n in names}
    return tuple(l for l in net.generated if l.name in owners)


@torch.no_grad()
def reconstruction_error(net, fraction: float = 1.0, names: list[str] | None = None) -> float:
    """Plain MSE between generated and (subsampled) teacher weights, noise-free."""
    was = net.training
    net.eval()
    generated = net.generate(fraction, layers=_layers_of(net, names))
    if names is not None:
        generated = {n: generated[n] for n in names}
    err = reconstruction(generated, lambda n: subsampled_target(net, n, fraction), "none").item()
    net.train(was)
    return err
