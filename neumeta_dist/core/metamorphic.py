"""The metamorphic network: INR + coordinate tables + the family's functional forward.

`MetamorphicNet.forward(x, fraction)` generates every *active* tensor of the network at that
width in one INR call, fills the remaining layers with the (smoothed, folded) teacher's
weights, and runs the student functionally. Weight generation lives inside `forward` so that
DDP's gradient hooks and DeepSpeed's parameter gathering see one ordinary module call, and
autograd flows from the loss through the weights into the INR with no manual chain rule.

The INR holds a head for every tensor of the whole stage plan from the start, and each
tensor's entry coordinate is fixed against that plan; a stage only changes which layers are
active (`activate`). So the parameter set — and every checkpoint's shape — is the same in
every stage, and a stage hands off to the next by an ordinary `load_state_dict`.

Shared, width-independent parameters beside the INR: SkipInit's residual scales α (one per
planned block, initialised to `alpha_init`: 0 makes a newly generated block the identity) and,
when the classifier is not generated, a trainable copy of the teacher's classifier.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Mapping

import torch
import torch.nn as nn

from ..config import INRConfig
from ..distributed.coordinate_parallel import Generation, replicated
from ..models.family import Family, Layer, apply_layer, parameter_count
from ..models.norms import Norm, norm_strategy
from ..recipe.stages import metamorphic_groups
from .cache import BytesCache
from .compilation import compile_over_widths
from .coords import CoordTable, build_table, centre_columns, normalise, split_output
from .inr import INR

TABLE_CACHE_BYTES = 2**30  # coordinate tables kept, least recently used dropped (core/cache.py)


class MetamorphicNet(nn.Module):
    def __init__(self, family: Family, reference: Mapping[str, torch.Tensor],
                 planned: tuple[Layer, ...], inr: INRConfig, scale: str = "inner",
                 norm: str | Norm = "skipinit", train_head: bool = False, alpha_init: float = 0.0,
                 nested: bool = False):
        super().__init__()
        self.family, self.planned, self.scale, self.nested = family, planned, scale, nested
        self.coord_noise, self.size_noise = inr.coord_noise, inr.size_noise
        self.kernel = max(max(l.k, 1) for l in planned)
        self.norm_width = max(family.full_sizes().values())
        names = [n for l in planned for n in l.tensor_names()]
        self.entry_ids = {n: i for i, n in enumerate(names)}
        self.heads = {n: (i if inr.heads == "per_tensor" else 0) for i, n in enumerate(names)}
        self.inr = INR(len(set(self.heads.values())), self.kernel ** 2, inr.hidden, inr.layers,
                       inr.num_freqs, inr.activation, inr.residual_scale)
        # The smoothed, folded teacher: fixed layers come from it, and it is the
        # reconstruction target. Not persistent: it is rebuilt from the teacher artefact.
        for name, t in reference.items():
            self.register_buffer(_buf(name), t.detach().clone(), persistent=False)
        planned_names = {l.name for l in planned}
        self.alpha = nn.ParameterDict()
        self.norm = norm_strategy(norm)  # meta.norm, chosen once
        if self.norm.skipinit:
            for b in family.blocks:
                if any(c.name in planned_names for c in b.convs):
                    # shape (1,), not (): DeepSpeed's initial broadcast views each parameter
                    # as bytes, which a 0-dim tensor cannot be
                    self.alpha[_buf(b.name)] = nn.Parameter(torch.full((1,), float(alpha_init)))
        self.shared = nn.ParameterDict()
        if train_head and family.fc.name not in planned_names:
            for n in family.fc.tensor_names():
                self.shared[_buf(n)] = nn.Parameter(self.reference(n).clone())
        self._tables: BytesCache[tuple[CoordTable, list]] = BytesCache(TABLE_CACHE_BYTES, _table_bytes)
        self.compile_student: str | None = None  # the torch.compile backend of the student, if compiled
        # How the INR call is spread over ranks (distributed/coordinate_parallel.py); training installs its strategy.
        self.generation: Generation = replicated
        self.activate(planned)

    def set_execution(self, matmul: str = "auto", compile: bool = False,
                      backend: str = "inductor") -> "MetamorphicNet":
        """How generation and the student run (never what they compute): the INR's segment
        matmul kernel, and `torch.compile` (with `backend`) of the INR trunk and of the
        functional student (core/compilation.py: one graph for every width)."""
        self.inr.set_execution(matmul, compile, backend)
        self.compile_student = backend if compile else None
        return self

    # --- what is generated ----------------------------------------------------------------
    def activate(self, layers: tuple[Layer, ...]) -> None:
        """Generate `layers` (a prefix of the plan's units) from now on; the rest is the teacher's."""
        unknown = {l.name for l in layers} - {l.name for l in self.planned}
        if unknown:
            raise ValueError(f"layers {sorted(unknown)} are not in the INR's plan")
        self.generated = tuple(layers)
        self.groups = metamorphic_groups(self.family, self.generated, self.scale)
        self._active_blocks = {b.name for b in self.family.blocks
                               if any(c.name in {l.name for l in layers} for c in b.convs)}
        self._tables.clear()

    @contextlib.contextmanager
    def only_heads(self, names: list[str]):
        """Within the block, the INR holds just the heads of `names` (written back on exit).

        A stage's warm-up fits a few new heads: with the whole stack as parameters, Adam and
        the backward would touch every head each step (measured: 4× slower at 24 heads).
        """
        heads = sorted({self.heads[n] for n in names})
        full_inr, full_heads = self.inr, self.heads
        remap = {h: i for i, h in enumerate(heads)}
        self.inr = full_inr.subset(heads)
        self.heads = {n: remap[h] for n, h in full_heads.items() if h in remap}
        self._tables.clear()
        try:
            yield self.inr
        finally:
            full_inr.load_subset(self.inr, heads)
            self.inr, self.heads = full_inr, full_heads
            self._tables.clear()

    def generated_names(self) -> list[str]:
        return [n for l in self.generated for n in l.tensor_names()]

    def head_of(self, name: str) -> int:
        return self.heads[name]

    # --- widths ---------------------------------------------------------------------------
    def sizes(self, fraction: float) -> dict[str, int]:
        return self.family.sizes(fraction, self.groups)

    def params_at(self, fraction: float) -> int:
        return parameter_count(self.family, self.sizes(fraction))

    def table(self, fraction: float, layers: tuple[Layer, ...] | None = None) -> tuple[CoordTable, list]:
        """The (cached) coordinate table at `fraction` of the active layers (or of `layers`, a
        subset of them) and each entry's output columns."""
        layers = self.generated if layers is None else layers
        sizes = self.sizes(fraction)
        device = self.inr.w_in.device
        # keyed by the channel counts, not the fraction: the widths that round to the same
        # network share one table
        key = (tuple(sorted(sizes.items())), tuple(l.name for l in layers), str(device))

        def build():
            table = build_table(layers, sizes, self.norm_width, self.heads, self.entry_ids, len(self.entry_ids),
                                self.family.full_sizes() if self.nested else None, device)
            return table, centre_columns(table, self.kernel, device)
        return self._tables.get(key, build)

    # --- generation and forward -------------------------------------------------------------
    def generate(self, fraction: float, noise: float | None = None, generator: torch.Generator | None = None,
                 layers: tuple[Layer, ...] | None = None) -> dict[str, torch.Tensor]:
        """Every active tensor (or those of `layers`) at `fraction`, from one INR call."""
        table, cols = self.table(fraction, layers)
        noise = self.coord_noise if noise is None else noise
        coords = normalise(table, noise if self.training else 0.0, generator, self.size_noise if self.training else 0.0)
        return split_output(self.generation(self.inr, coords, table.segments, cols), table)

    def reference(self, name: str) -> torch.Tensor:
        return getattr(self, _buf(name))

    def storage(self) -> dict[str, int]:
        """Parameters the metamorphic network keeps to emit every width: the INR's, the tensors
        it does not generate (the teacher's fixed layers at full width, a trained head), and its
        own scalars (SkipInit α). results.json puts them beside each width's network."""
        generated = set(self.generated_names())
        fixed = sum(self.fixed(n).numel() for n in self.reference_names() if n not in generated)
        inr = sum(p.numel() for p in self.inr.parameters())
        alphas = sum(p.numel() for p in self.alpha.parameters())
        return {"inr": inr, "fixed": fixed, "alphas": alphas, "total": inr + fixed + alphas}

    def reference_names(self) -> list[str]:
        return [n for l in self.family.layers for n in l.tensor_names()]

    def fixed(self, name: str) -> torch.Tensor:
        """A tensor that is not generated: the shared trainable copy, else the teacher's."""
        key = _buf(name)
        return self.shared[key] if key in self.shared else self.reference(name)

    def weights(self, generated: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """Every tensor of the network: generated first, fixed ones for the rest (no copies)."""
        return _Weights(generated, self)

    def alphas(self) -> dict[str, torch.Tensor]:
        """Residual scales of the active generated blocks (absent: 1)."""
        return {b: self.alpha[_buf(b)] for b in self._active_blocks if _buf(b) in self.alpha}

    def forward(self, x: torch.Tensor, fraction: float = 1.0, noise: float | None = None,
                generator: torch.Generator | None = None,
                weights: Mapping[str, torch.Tensor] | None = None):
        """Logits of the width-`fraction` network, and the generated tensors used.

        Pass `weights` to run a network generated earlier (evaluation, merged samples).
        """
        generated = self.generate(fraction, noise, generator) if weights is None else weights
        student = _compiled_student(self.compile_student) if self.compile_student else student_forward
        full = self.weights(generated)
        return student(self.family, x, {n: full[n] for n in self.reference_names()}, self.alphas()), generated


def student_forward(family, x: torch.Tensor, weights: dict[str, torch.Tensor],
                    alphas: dict[str, torch.Tensor]) -> torch.Tensor:
    """The width-w network on `weights` (every tensor), SkipInit scales `alphas` (absent: 1)."""
    return family.forward(x, lambda spec, h: apply_layer(spec, h, weights), lambda b: alphas.get(b.name, 1.0))


@functools.cache
def _compiled_student(backend: str):
    """`student_forward` compiled once per backend: one graph for every width (per grad mode)."""
    return compile_over_widths(student_forward, backend)


class _Weights(Mapping):
    def __init__(self, generated: Mapping[str, torch.Tensor], net: MetamorphicNet):
        self.generated, self.net = generated, net

    def __getitem__(self, name):
        if name in self.generated:
            return self.generated[name]
        return self.net.fixed(name)

    def __iter__(self):
        return iter(self.generated)

    def __len__(self):
        return len(self.generated)


def _table_bytes(cached: tuple[CoordTable, list]) -> int:
    table = cached[0]
    return sum(t.numel() * t.element_size() for t in (table.index, table.extent, table.divisor) if t is not None)


def _buf(name: str) -> str:
    return "ref_" + name.replace(".", "_")
