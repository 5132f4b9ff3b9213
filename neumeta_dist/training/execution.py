"""How a training step executes on its device: precision, compilation, memory format.

One object built from `train.precision/compile/channels_last`, so the loop applies the GPU
path in three calls (`prepare` the network and teacher once, `batch` each input, `autocast`
around the forward) and the settings never leak into what the step computes:
- bf16 autocast: the INR's GEMMs (grouped on CUDA, see core/inr.py) and the student's convs run
  in bf16; Fourier features, the INR's residual stream, losses and the optimiser stay fp32.
- compile: the INR trunk and the functional student under `torch.compile(dynamic=True)` —
  one graph serves every sampled width instead of a recompile per width.
- channels-last: images and the teacher in NHWC, the layout cuDNN's tensor-core convs use;
  the student's generated weights follow its input's layout inside the conv.
- the optimiser: AdamW's fused CUDA kernel (one launch for every parameter) on a GPU.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Execution:
    precision: str = "fp32"  # fp32 | bf16
    compile: bool = False
    channels_last: bool = False

    @classmethod
    def from_config(cls, train_cfg) -> "Execution":
        return cls(train_cfg.precision, train_cfg.compile, train_cfg.channels_last)

    def autocast(self, device: torch.device | str):
        device = torch.device(device)
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, net: nn.Module, teacher: nn.Module | None = None) -> None:
        """Once per stage: the metamorphic net's kernels, the teacher's layout."""
        net.set_execution("auto", self.compile)
        if teacher is not None:
            self.layout(teacher)

    def layout(self, module: nn.Module) -> nn.Module:
        """A plain network (the teacher, trained in stage 0 or distilled from) in the step's layout."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @staticmethod
    def optimizer_kwargs(device: torch.device | str) -> dict:
        return {"fused": True} if torch.device(device).type == "cuda" else {}
