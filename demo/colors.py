"""Colours shared by the image overlay and the 3D figure, so a finger looks the same in both."""
from __future__ import annotations

import numpy as np

from handos.render.overlay import FINGER_COLORS, JOINT_COLORS, MESH_COLORS

FINGERS = ("thumb", "index", "middle", "ring", "pinky")

__all__ = ["FINGERS", "MESH_COLORS", "finger_colors", "joint_colors", "css"]


def finger_colors() -> np.ndarray:
    """(5, 3) uint8 RGB, thumb..pinky: the overlay's finger palette."""
    return np.asarray([FINGER_COLORS[f] for f in FINGERS], dtype=np.uint8)


def joint_colors() -> np.ndarray:
    """(21, 3) uint8 RGB per joint, as the overlay draws them."""
    return np.asarray(JOINT_COLORS, dtype=np.uint8)


def css(rgb) -> str:
    """'rgb(r,g,b)' for Plotly."""
    r, g, b = (int(v) for v in tuple(rgb)[:3])
    return f"rgb({r},{g},{b})"
