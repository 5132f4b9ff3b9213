"""Weight smoothing: permute the folded teacher's channels so neighbours hold similar filters.

NeuMeta generates weights with an implicit neural representation (INR) that is a continuous
function of the (normalised) channel index. A trained network's channel order is arbitrary,
so neighbouring indices hold unrelated filters and the INR would have to fit noise. Channel
order is a symmetry, though: permuting the channels of a group — the output rows (and bias)
of every layer that writes the group, and the input columns of every layer that reads it —
leaves the network function unchanged. We pick, per group, the order that makes adjacent
channels similar, i.e. a short Hamiltonian path through the channels' feature vectors (a
travelling-salesman path), found by greedy nearest neighbour followed by 2-opt.

The channel groups of `ResNetFamily` are exactly the permutation symmetries: a residual
stream is one group shared by all blocks that read or add to it, so a single permutation is
applied to all of them. "image" and "classes" are the network's interface and stay fixed.

Each layer's weight-axis term of the smoothness measure depends on only one group's order,
so the total variation splits into independent per-group sums; that is why each group can
be solved, and checked against identity, on its own.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..models.family import CLASSES, IMAGE, Family

Weights = Mapping[str, torch.Tensor]
FIXED_GROUPS = frozenset({IMAGE, CLASSES})


def _parts(family: Family, weights: Weights, group: str) -> list[tuple[torch.Tensor, int]]:
    """(tensor, channel axis) for every tensor that has one axis indexed by `group`'s channels."""
    parts = []
    for spec in family.layers:
        if spec.out_group == group:  # weight rows and every per-channel tensor (bias, GN scale)
            parts += [(weights[n], 0) for n in spec.tensor_names()]
        if spec.in_group == group:
            parts.append((weights[f"{spec.name}.weight"], 1))
    return parts


def channel_features(family: Family, weights: Weights, group: str) -> torch.Tensor:
    """(C, D): per channel, its producers' rows (weight[c], bias[c]) and consumers' columns.

    Each part is scaled by 1/sqrt(its length), so the squared distance between two channels
    is a sum of per-tensor *mean* squared differences — every tensor counts equally, as in
    `total_variation`, instead of wide layers drowning out biases and narrow ones.
    """
    cols = []
    for t, axis in _parts(family, weights, group):
        rows = t.movedim(axis, 0).reshape(t.shape[axis], -1).double()
        cols.append(rows / rows.shape[1] ** 0.5)
    return torch.cat(cols, dim=1)


def _nearest_neighbour(dist: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Greedy paths, one per start, built together so each step is one batched argmin."""
    k, n = len(starts), dist.shape[0]
    rows = torch.arange(k)
    paths = torch.empty(k, n, dtype=torch.long)
    visited = torch.zeros(k, n, dtype=torch.bool)
    cur = starts
    paths[:, 0], visited[rows, cur] = cur, True
    for step in range(1, n):
        cur = dist[cur].masked_fill(visited, float("inf")).argmin(dim=1)
        paths[:, step], visited[rows, cur] = cur, True
    return paths


def _two_opt(dist: torch.Tensor, tour: torch.Tensor, rounds: int) -> torch.Tensor:
    """2-opt on a closed tour; each round applies a batch of non-overlapping improving moves.

    Move (i, j) reverses tour[i+1..j], swapping edges (t_i, t_i+1), (t_j, t_j+1) for
    (t_i, t_j), (t_i+1, t_j+1). All gains come from one permuted distance matrix; moves whose
    edge ranges [i, j] are disjoint don't interact, so they can all be applied at once.
    """
    m = len(tour)
    allowed = torch.ones(m - 1, m, dtype=torch.bool).triu(2)  # j >= i + 2; i = m - 1 never fits
    eps = 1e-12 * float(dist.max().clamp_min(1e-300))
    for _ in range(rounds):
        p = dist[tour[:, None], tour[None, :]]
        edge = torch.cat([p.diagonal(1), p[-1:, 0]])  # edge[i] = d(t_i, t_i+1), wrapping
        # gain[i, j] = p[i, j] + p[i+1, j+1] - edge[i] - edge[j]; j + 1 wraps to 0 at j = m-1
        gain = torch.cat([p[1:, 1:], p[1:, :1]], dim=1).add_(p[:-1]).sub_(edge[:-1, None])
        best, js = gain.sub_(edge[None, :]).masked_fill_(~allowed, float("inf")).min(dim=1)
        order = torch.argsort(best, stable=True)
        order = order[best[order] < -eps].tolist()
        if not order:
            break
        index, taken, js = torch.arange(m), bytearray(m), js.tolist()
        for i in order:  # greedy by gain over <= m candidates; the overlap test is a C-speed find
            j = js[i]
            if taken.find(1, i, j + 1) == -1:
                taken[i:j + 1] = b"\x01" * (j + 1 - i)
                index[i + 1:j + 1] = index[i + 1:j + 1].flip(0)
        tour = tour[index]
    return tour


def path_length(features: torch.Tensor, perm: torch.Tensor) -> float:
    """Sum of Euclidean distances between consecutive channels in `perm` order."""
    f = features[perm].double()
    return float((f[1:] - f[:-1]).norm(dim=1).sum())


def solve_path(features: torch.Tensor, two_opt_rounds: int = 50, n_starts: int = 8) -> torch.Tensor:
    """A short open Hamiltonian path over the rows of `features` (Euclidean); deterministic.

    An open path is a closed tour through one extra node at distance 0 from everything:
    cutting the tour at that node leaves the path, so plain closed-tour 2-opt applies.
    Nearest-neighbour starts are the points farthest from the centroid — a good open path
    tends to begin at an extreme point.
    """
    n = features.shape[0]
    if n <= 2:
        return torch.arange(n)
    f = features.double()
    dist = torch.cdist(f, f).clamp_min(0)
    starts = torch.argsort((f - f.mean(0)).norm(dim=1), descending=True, stable=True)[:n_starts]
    paths = _nearest_neighbour(dist, starts)
    lengths = dist[paths[:, :-1], paths[:, 1:]].sum(dim=1)
    path = paths[int(lengths.argmin())]
    padded = torch.nn.functional.pad(dist, (0, 1, 0, 1))  # node n: the zero-cost path ends
    tour = _two_opt(padded, torch.cat([path, torch.tensor([n])]), two_opt_rounds)
    cut = int((tour == n).nonzero())
    return torch.cat([tour[cut + 1:], tour[:cut]])


def permute(family: Family, weights: Weights, perms: Mapping[str, torch.Tensor]) -> dict:
    """New weights with channel `perms[g][k]` of each group g moved to position k.

    Producers are permuted on axis 0 of the weight and of their per-channel tensors (bias,
    GroupNorm scale: GroupNorm(1, C) pools over all channels, so it commutes with the
    permutation), consumers on axis 1 of the weight, so the network function is unchanged.
    The input dict is left untouched.
    """
    if FIXED_GROUPS & set(perms):
        raise ValueError(f"groups {sorted(FIXED_GROUPS & set(perms))} are the network's interface")
    out = dict(weights)
    for spec in family.layers:
        w = f"{spec.name}.weight"
        if spec.out_group in perms:
            for n in spec.tensor_names():
                out[n] = out[n][perms[spec.out_group]]
        if spec.in_group in perms:
            out[w] = out[w][:, perms[spec.in_group]]
    return out


def _axis_tv(t: torch.Tensor, axis: int) -> float:
    return float(t.diff(dim=axis).abs().mean()) if t.shape[axis] > 1 else 0.0


def group_variation(family: Family, weights: Weights, group: str) -> float:
    """The part of `total_variation` that depends on `group`'s channel order."""
    return sum(_axis_tv(t, axis) for t, axis in _parts(family, weights, group))


def total_variation(family: Family, weights: Weights) -> float:
    """Smoothness of channel order (lower is smoother).

    For every layer: mean|W[c+1] − W[c]| over the weight's axis 0 (output channels), plus
    mean|W[:, c+1] − W[:, c]| over axis 1 (input channels), plus mean|b[c+1] − b[c]| over the
    bias. Each mean is over all elements of that difference tensor (kernel positions and the
    other channel axis included); tensors with a single channel on an axis add 0 for it.
    Fixed groups ("image", "classes") are included, so this is the whole-network sum.
    """
    groups = {g for s in family.layers for g in (s.in_group, s.out_group)}
    return sum(group_variation(family, weights, g) for g in groups)


def importance_order(family: Family, weights: Weights, group: str) -> torch.Tensor:
    """`group`'s channels, most important first: the norm of what writes a channel times the
    norm of what reads it (a channel that is weak on either side contributes little) — the
    order for nested coordinates, where a narrower network keeps the leading channels."""
    produced = consumed = 0.0
    for t, axis in _parts(family, weights, group):
        sq = t.movedim(axis, 0).reshape(t.shape[axis], -1).double().pow(2).sum(1)
        if axis == 0:
            produced = produced + sq
        else:
            consumed = consumed + sq
    score = (produced * consumed).sqrt() if torch.is_tensor(produced) and torch.is_tensor(consumed) else None
    if score is None:
        raise ValueError(f"group {group} has no producer or no consumer to rank its channels by")
    return torch.argsort(score, descending=True, stable=True)


def smooth(family: Family, weights: Weights, two_opt_rounds: int = 50,
           by_importance: frozenset[str] = frozenset()) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """Permute every free group of more than 2 channels along a short path through its channels.

    Returns (new_weights, perms, stats). `perms` has an entry for every group that was
    considered; it is identity where the path did not lower that group's variation (the
    path minimises Euclidean distance, the measure is mean absolute difference, so they can
    disagree) — hence tv_after <= tv_before always, unless `by_importance` names groups: those
    are ordered by `importance_order` instead, whatever that does to their variation.
    """
    groups = dict.fromkeys(s.out_group for s in family.layers if s.out_group not in FIXED_GROUPS)
    perms = {}
    for g in groups:
        if g in by_importance:
            perms[g] = importance_order(family, weights, g)
            continue
        feats = channel_features(family, weights, g)
        if feats.shape[0] <= 2:
            continue
        perm = solve_path(feats, two_opt_rounds)
        if group_variation(family, permute(family, weights, {g: perm}), g) >= group_variation(family, weights, g):
            perm = torch.arange(feats.shape[0])
        perms[g] = perm
    out = permute(family, weights, perms)
    stats = {"tv_before": total_variation(family, weights), "tv_after": total_variation(family, out)}
    return out, perms, stats
