"""Colours shared by the image overlay and the 3D figure, so a finger looks the same in both."""
from __future__ import annotations

import numpy as np

from handos.io.schema import BONES

try:  # the overlay's palette (handos.render); the demo must match it
    from handos.render.overlay import FINGER_COLORS as _FINGERS
except ImportError:  # TODO(demo): drop once handos.render lands
    _FINGERS = ((255, 80, 80), (255, 200, 40), (60, 200, 80), (40, 160, 255), (200, 90, 255))

WRIST_COLOR = (230, 230, 230)
# mesh colours per handedness (RGB 0-255): used for the mesh overlay and the Plotly Mesh3d
MESH_COLORS = {"right": (236, 180, 150), "left": (150, 190, 236)}


def finger_colors() -> np.ndarray:
    """(5, 3) uint8 RGB, thumb..pinky."""
    return np.asarray([tuple(c)[:3] for c in _FINGERS], dtype=np.uint8)


def joint_colors() -> np.ndarray:
    """(21, 3) uint8 RGB: the wrist neutral, each finger's joints in its finger colour."""
    f = finger_colors()
    return np.concatenate([np.asarray([WRIST_COLOR], np.uint8), np.repeat(f, 4, axis=0)], axis=0)


def bone_colors() -> np.ndarray:
    """(20, 3) uint8 RGB: a bone takes its child joint's colour."""
    return joint_colors()[[child for _, child in BONES]]


def css(rgb) -> str:
    """'rgb(r,g,b)' for Plotly."""
    r, g, b = (int(v) for v in tuple(rgb)[:3])
    return f"rgb({r},{g},{b})"
