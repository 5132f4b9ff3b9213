"""Host tensors onto the device, used by the model code (coordinate tables, INR inputs)."""
from __future__ import annotations

import torch


def upload(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device` without making the host wait: staged in pinned memory and
    copied asynchronously (a pageable copy to a GPU waits for the stream to drain)."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
