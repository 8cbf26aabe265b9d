"""The annotated image: mesh overlay (optional) under boxes, labels and finger-coloured skeletons."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from handos.io.schema import Hand
from handos.render.overlay import draw_hands

LAYER_NAMES = ("boxes", "labels", "skeleton", "mesh")


@dataclass
class Layers:
    """Which layers to draw on the image."""

    boxes: bool = True
    skeleton: bool = True
    labels: bool = True
    mesh: bool = True

    @staticmethod
    def from_names(names) -> Layers:
        """From the names ticked in the 'Show' checkbox group."""
        names = set(names or [])
        return Layers(boxes="boxes" in names, skeleton="skeleton" in names, labels="labels" in names, mesh="mesh" in names)


def annotate(rgb: np.ndarray, hands: Sequence[Hand], K: np.ndarray, faces_for, layers: Layers) -> np.ndarray:
    """(H, W, 3) uint8 RGB at the image's own resolution with the chosen layers drawn (handos.render.overlay)."""
    out = draw_hands(rgb, list(hands), show_boxes=layers.boxes, show_skeleton=layers.skeleton, show_labels=layers.labels,
                     mesh_faces=faces_for if layers.mesh else None, K=np.asarray(K, dtype=np.float32), mesh_alpha=0.6)
    return np.asarray(out, dtype=np.uint8)
