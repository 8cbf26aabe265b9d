"""handos: open, fast 3D hand reconstruction (HandOS, CVPR 2025).

>>> import handos
>>> model = handos.load()            # shipped weights, CPU or CUDA
>>> hands = model("photo.jpg")       # list[handos.Hand]
"""
from __future__ import annotations

from handos.errors import ConfigError, HandosError, InputError, ModelError, RemoteError

__version__ = "0.1.0"

__all__ = ["load", "Hand", "HandOS", "HandosError", "InputError", "ModelError", "ConfigError", "RemoteError"]


def __getattr__(name: str):
    """Import the heavy parts lazily so `import handos` stays cheap."""
    if name in ("load", "HandOS"):
        from handos.model import pipeline

        return getattr(pipeline, name)
    if name == "Hand":
        from handos.io.schema import Hand

        return Hand
    raise AttributeError(name)
