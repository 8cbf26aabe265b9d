"""Loading the model once per device, and the Spaces GPU decorator when the `spaces` package exists."""
from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from typing import Any

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """handos.device.resolve_device as a string key ('cpu', 'cuda', ...); a DeviceError names the problem."""
    from handos.device import resolve_device as _resolve

    return str(_resolve(device))


class ModelCache:
    """One model per resolved device, loaded on first use (thread-safe)."""

    def __init__(self, factory: Callable[[str], Any] | None = None) -> None:
        """`factory(device) -> model`; defaults to handos.load(device=...)."""
        self.factory = factory or _load_handos
        self.models: dict[str, Any] = {}
        self.lock = threading.Lock()

    def get(self, device: str) -> Any:
        """The model for `device` ('auto', 'cpu' or 'cuda')."""
        resolved = resolve_device(device)
        with self.lock:
            if resolved not in self.models:
                self.models[resolved] = self.factory(resolved)
            return self.models[resolved]


def _load_handos(device: str) -> Any:
    """handos.load with the shipped weights on `device`."""
    import handos

    return handos.load(device=device)


def gpu_decorator(duration: int = 60) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` on Hugging Face Spaces (ZeroGPU), else the identity."""
    if importlib.util.find_spec("spaces") is None:
        return lambda fn: fn
    import spaces  # type: ignore

    return spaces.GPU(duration=duration)
