"""Per-hand zoomed crops: each hand as it is and with its mesh and skeleton, large enough to judge by eye."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from demo.overlays import handedness_text
from handos.io.schema import Hand
from handos.render.overlay import MESH_COLORS, draw_skeleton
from handos.render.shading import render_mesh

CROP_PX = 224  # each panel's side
CROP_GROW = 1.4  # the panel shows the hand's box grown by this factor


def crop_window(hand: Hand, width: int, height: int, grow: float = CROP_GROW) -> tuple[float, float, float]:
    """(x0, y0, side) of a square window around the hand's box, grown by `grow` (may extend past the image)."""
    box = np.asarray(hand.bbox_xyxy, dtype=np.float64).reshape(4)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1], 8.0) * grow
    return float(cx - side / 2), float(cy - side / 2), float(side)


def hand_crop(rgb: np.ndarray, hand: Hand, K: np.ndarray, faces: np.ndarray | None, size: int = CROP_PX) -> np.ndarray:
    """(size, 2*size, 3) uint8: the zoomed hand, and beside it the same view with its mesh and skeleton."""
    h, w = rgb.shape[:2]
    x0, y0, side = crop_window(hand, w, h)
    s = size / side
    affine = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], dtype=np.float64)
    plain = cv2.warpAffine(rgb, affine, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(235, 235, 235))
    drawn = plain.copy()
    if faces is not None and hand.vertices is not None:
        Kc = np.asarray(K, dtype=np.float64).copy()
        Kc[0, 0] *= s
        Kc[1, 1] *= s
        Kc[0, 2] = (Kc[0, 2] - x0) * s
        Kc[1, 2] = (Kc[1, 2] - y0) * s
        mesh = (np.asarray(hand.vertices, np.float32), np.asarray(faces), MESH_COLORS.get(hand.handedness, MESH_COLORS["right"]))
        drawn = np.ascontiguousarray(render_mesh(drawn, [mesh], Kc.astype(np.float32), alpha=0.55))
    if hand.keypoints_2d is not None:
        kp = (np.asarray(hand.keypoints_2d, np.float64).reshape(21, 2) - [x0, y0]) * s
        draw_skeleton(drawn, kp, 1)
    gap = np.full((size, 4, 3), 255, np.uint8)
    return np.concatenate([plain, gap, drawn], axis=1)


def crop_caption(hand: Hand) -> str:
    """'#0 right? (handedness 0.55) · detection 0.93'."""
    return (f"#{hand.id} {handedness_text(hand)} (handedness {float(hand.handedness_score):.2f}) "
            f"· detection {float(hand.score):.2f}")


def hand_crops(rgb: np.ndarray, hands: Sequence[Hand], K: np.ndarray, faces_for) -> list[tuple[np.ndarray, str]]:
    """(crop image, caption) per hand, in the hands' order."""
    return [(hand_crop(rgb, h, K, faces_for(h.handedness) if faces_for is not None else None), crop_caption(h))
            for h in hands]


__all__ = ["CROP_PX", "crop_caption", "crop_window", "hand_crop", "hand_crops"]
