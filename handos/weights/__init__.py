"""The shipped weights folder (safetensors, configs, NOTICE, model card) and the one way to locate a file in it."""
from __future__ import annotations

from pathlib import Path

from handos.errors import ModelError

WEIGHTS_DIR = Path(__file__).resolve().parent


def weights_path(name: str) -> Path:
    """Path of the shipped weights file `name`; a ModelError naming it when it is missing."""
    path = WEIGHTS_DIR / name
    if not path.exists():
        raise ModelError(f"shipped weights file {name} missing at {path}; reinstall handos or pass your own weights")
    return path


__all__ = ["WEIGHTS_DIR", "weights_path"]
