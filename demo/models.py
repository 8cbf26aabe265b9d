"""Loading the model once per device (and a view of it per recall mode), and the Spaces GPU decorator."""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import threading
from collections.abc import Callable
from typing import Any

from handos.foundation import RECALL_MODES

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_RECALL = "fast"
RETRY_RECALL = "search"  # how hard the demo looks when the chosen mode finds nothing
RECALL_HELP = {
    "off": "exactly MediaPipe's detector",
    "fast": "default: extra detector views only where nothing was found",
    "full": "extra views on every image with a free hand slot",
    "search": "multi-scale search, about 10x slower: for hard images",
}

__all__ = ["DEFAULT_RECALL", "DEVICES", "RECALL_HELP", "RECALL_MODES", "RETRY_RECALL", "ModelCache", "cuda_available",
           "device_choices", "gpu_decorator", "resolve_device", "with_recall"]


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def device_choices() -> list[str]:
    """The devices the UI offers: 'cuda' only where torch sees one."""
    return list(DEVICES) if cuda_available() else [d for d in DEVICES if d != "cuda"]


def with_recall(model: Any, recall: str) -> Any:
    """A view of `model` whose detector looks for hands with `recall` (shares every network and weight).

    The recall mode lives in the foundation's config, so each mode gets a shallow copy of the model and its
    foundation with its own config: concurrent requests with different modes never change each other's.
    """
    foundation = getattr(model, "foundation", None)
    config = getattr(foundation, "config", None)
    if config is None or not dataclasses.is_dataclass(config) or getattr(config, "recall_boost", recall) == recall:
        return model
    view = copy.copy(model)
    view.foundation = copy.copy(foundation)
    view.foundation.config = dataclasses.replace(config, recall_boost=recall)
    return view


def resolve_device(device: str) -> str:
    """handos.device.resolve_device as a string key ('cpu', 'cuda', ...); a DeviceError names the problem."""
    from handos.device import resolve_device as _resolve

    return str(_resolve(device))


class ModelCache:
    """One model per resolved device, loaded on first use, and one view of it per recall mode (thread-safe)."""

    def __init__(self, factory: Callable[[str], Any] | None = None) -> None:
        """`factory(device) -> model`; defaults to handos.load(device=...)."""
        self.factory = factory or _load_handos
        self.models: dict[tuple[str, str], Any] = {}
        self.lock = threading.Lock()

    def get(self, device: str, recall: str = DEFAULT_RECALL) -> Any:
        """The model for `device` ('auto', 'cpu' or 'cuda') looking for hands with `recall` (RECALL_MODES)."""
        if recall not in RECALL_MODES:
            from handos.errors import ConfigError

            raise ConfigError(f"recall must be one of {', '.join(RECALL_MODES)}, got {recall!r}")
        resolved = resolve_device(device)
        with self.lock:
            if (resolved, DEFAULT_RECALL) not in self.models:
                self.models[(resolved, DEFAULT_RECALL)] = with_recall(self.factory(resolved), DEFAULT_RECALL)
            if (resolved, recall) not in self.models:
                self.models[(resolved, recall)] = with_recall(self.models[(resolved, DEFAULT_RECALL)], recall)
            return self.models[(resolved, recall)]


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
