"""The annotated image: mesh overlay (optional) under boxes, handedness labels and finger-coloured skeletons.

Strokes are sized per hand (a small hand gets thin lines), and each label sits outside its hand's box and
shows the handedness with the handedness' own confidence, marked `?` when it is unsure.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from handos.io.schema import Hand
from handos.render.overlay import HAND_COLORS, MESH_COLORS, draw_skeleton, line_width
from handos.render.shading import render_mesh

LAYER_NAMES = ("boxes", "labels", "skeleton", "mesh")
# the default keeps small hands readable: the mesh is in the 3D view and the per-hand crops, not over the photo
DEFAULT_LAYERS = ("boxes", "labels", "skeleton")
UNSURE_HANDEDNESS = 0.7  # a handedness score under this is shown as "left?" / "right?"
MESH_ALPHA = 0.6


@dataclass
class Layers:
    """Which layers to draw on the image."""

    boxes: bool = True
    skeleton: bool = True
    labels: bool = True
    mesh: bool = False

    @staticmethod
    def from_names(names) -> Layers:
        """From the names ticked in the 'Show' checkbox group."""
        names = set(names or [])
        return Layers(boxes="boxes" in names, skeleton="skeleton" in names, labels="labels" in names, mesh="mesh" in names)


def handedness_text(hand: Hand) -> str:
    """'right' or 'right?' (handedness score under UNSURE_HANDEDNESS)."""
    unsure = float(hand.handedness_score) < UNSURE_HANDEDNESS
    return f"{hand.handedness}{'?' if unsure else ''}"


def hand_label(hand: Hand) -> str:
    """The box label: handedness and its own confidence, e.g. 'right 0.98', 'left? 0.55' (clips: '#3 right 0.98')."""
    track = "" if getattr(hand, "track_id", None) is None else f"#{hand.track_id} "
    return f"{track}{handedness_text(hand)} {float(hand.handedness_score):.2f}"


def hand_side_px(hand: Hand) -> float:
    """The longer side of the hand's box, pixels."""
    box = np.asarray(hand.bbox_xyxy, dtype=np.float64).reshape(4)
    return float(max(box[2] - box[0], box[3] - box[1], 1.0))


def stroke_width(image: np.ndarray, hand: Hand) -> int:
    """Line width for one hand: the image's usual width, thinner for small hands (1 px per ~90 px of hand)."""
    return int(np.clip(round(hand_side_px(hand) / 90), 1, line_width(image)))


def draw_label(img: np.ndarray, text: str, box: np.ndarray, color: tuple[int, int, int]) -> None:
    """A filled label just above the box (below it when there is no room), never over the hand."""
    h, w = img.shape[:2]
    scale = 0.45 * max(1.0, min(h, w) / 480)
    thick = max(1, int(round(min(h, w) / 480)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    lh = th + base + 4
    x = int(np.clip(round(box[0]), 0, max(0, w - tw - 4)))
    y_bottom = int(round(box[1])) - 1
    if y_bottom - lh < 0:  # no room above: under the box
        y_bottom = min(int(round(box[3])) + lh + 1, h - 1)
    cv2.rectangle(img, (x, y_bottom - lh), (x + tw + 4, y_bottom), color, -1)
    lum = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    cv2.putText(img, text, (x + 2, y_bottom - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0) if lum > 140 else (255, 255, 255), thick, cv2.LINE_AA)


def annotate(rgb: np.ndarray, hands: Sequence[Hand], K: np.ndarray, faces_for, layers: Layers) -> np.ndarray:
    """(H, W, 3) uint8 RGB at the image's own resolution with the chosen layers drawn."""
    img = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    if layers.mesh:
        meshes = [(np.asarray(h.vertices, np.float32), np.asarray(faces_for(h.handedness)),
                   MESH_COLORS.get(h.handedness, MESH_COLORS["right"])) for h in hands if h.vertices is not None]
        if meshes:
            img = np.ascontiguousarray(render_mesh(img, meshes, np.asarray(K, dtype=np.float32), alpha=MESH_ALPHA))
    elif layers.boxes or layers.skeleton or layers.labels:
        img = img.copy()
    for hand in hands:
        color = HAND_COLORS.get(hand.handedness, (255, 255, 255))
        box = np.asarray(hand.bbox_xyxy, dtype=np.float64).reshape(4)
        width = stroke_width(img, hand)
        finite = bool(np.all(np.isfinite(box)))
        if layers.boxes and finite:
            cv2.rectangle(img, (int(round(box[0])), int(round(box[1]))), (int(round(box[2])), int(round(box[3]))),
                          color, width, cv2.LINE_AA)
        if layers.skeleton and hand.keypoints_2d is not None:
            draw_skeleton(img, hand.keypoints_2d, width)
    if layers.labels:  # last, so no hand's strokes cover another's label
        for hand in hands:
            box = np.asarray(hand.bbox_xyxy, dtype=np.float64).reshape(4)
            if np.all(np.isfinite(box)):
                draw_label(img, hand_label(hand), box, HAND_COLORS.get(hand.handedness, (255, 255, 255)))
    return np.asarray(img, dtype=np.uint8)


__all__ = ["DEFAULT_LAYERS", "LAYER_NAMES", "UNSURE_HANDEDNESS", "Layers", "annotate", "hand_label",
           "handedness_text", "stroke_width"]
