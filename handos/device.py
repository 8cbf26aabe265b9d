"""The one device resolver: 'auto' | 'cpu' | 'cuda' | 'cuda:N' | torch.device -> torch.device."""
from __future__ import annotations

import torch

from handos.errors import DeviceError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None/'') -> cuda when available else cpu; an unknown name or 'cuda' without a GPU is a DeviceError."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for but CUDA is not available here (no CUDA GPU); use device cpu or auto")
    return dev


__all__ = ["resolve_device"]
