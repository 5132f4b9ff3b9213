"""Exponential moving average of a module's parameters (evaluation uses the average).

The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as TensorFlow's
`num_updates`): with a fixed 0.995 a 60-step stage would still be 74 % its starting weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class EMA:
    def __init__(self, module: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = {k: p.detach().clone() for k, p in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in module.named_parameters():
            self.shadow[k].lerp_(p.detach(), 1.0 - decay)

    def state_dict(self, cpu: bool = False) -> dict:
        """`cpu=True`: copies on the CPU (what checkpoints store, whatever the device)."""
        shadow = {k: v.detach().cpu().clone() for k, v in self.shadow.items()} if cpu else self.shadow
        return {"decay": self.decay, "updates": self.updates, "shadow": shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state.get("updates", 0)
        self.shadow = {k: v.to(self.shadow[k].device if k in self.shadow else v.device).clone()
                       for k, v in state["shadow"].items()}

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for k, p in module.named_parameters():
            p.copy_(self.shadow[k])
