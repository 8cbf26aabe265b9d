"""The annotated image: mesh overlay (optional) under boxes, labels and finger-coloured skeletons."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from demo.colors import MESH_COLORS
from handos.io.schema import Hand


LAYER_NAMES = ("boxes", "labels", "skeleton", "mesh")


@dataclass
class Layers:
    """Which layers to draw on the image."""

    boxes: bool = True
    skeleton: bool = True
    labels: bool = True
    mesh: bool = True

    @staticmethod
    def from_names(names) -> "Layers":
        """From the names ticked in the 'Show' checkbox group."""
        names = set(names or [])
        return Layers(boxes="boxes" in names, skeleton="skeleton" in names, labels="labels" in names, mesh="mesh" in names)


def annotate(rgb: np.ndarray, hands: Sequence[Hand], K: np.ndarray, faces_for, layers: Layers) -> np.ndarray:
    """(H, W, 3) uint8 RGB at the image's own resolution with the chosen layers drawn."""
    from handos.render import render_mesh
    from handos.render.overlay import draw_hands

    out = np.ascontiguousarray(rgb.copy())
    meshed = [h for h in hands if h.vertices is not None]
    if layers.mesh and meshed:
        meshes = [(np.asarray(h.vertices, np.float32), np.asarray(faces_for(h.handedness)),
                   MESH_COLORS.get(h.handedness, MESH_COLORS["right"])) for h in meshed]
        out = render_mesh(out, meshes, K, alpha=0.6)
    if hands and (layers.boxes or layers.skeleton or layers.labels):
        out = draw_hands(out, list(hands), show_boxes=layers.boxes, show_skeleton=layers.skeleton, show_labels=layers.labels)
    return np.asarray(out, dtype=np.uint8)
