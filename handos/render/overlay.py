"""2D overlays of detected hands: boxes with labels, 21-keypoint skeletons coloured per finger, meshes."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from handos.errors import InputError
from handos.io.schema import BONES, Hand
from handos.render.shading import render_mesh

# RGB colours; the images handos draws on are RGB
FINGER_COLORS: dict[str, tuple[int, int, int]] = {
    "wrist": (255, 255, 255),
    "thumb": (235, 64, 52),
    "index": (60, 200, 75),
    "middle": (50, 120, 240),
    "ring": (245, 205, 40),
    "pinky": (220, 60, 220),
}
_FINGERS = ("thumb", "index", "middle", "ring", "pinky")
JOINT_COLORS: tuple[tuple[int, int, int], ...] = (FINGER_COLORS["wrist"],) + tuple(
    FINGER_COLORS[f] for f in _FINGERS for _ in range(4))
BONE_COLORS: tuple[tuple[int, int, int], ...] = tuple(JOINT_COLORS[child] for _, child in BONES)
HAND_COLORS: dict[str, tuple[int, int, int]] = {"right": (255, 150, 40), "left": (40, 200, 255)}
MESH_COLORS: dict[str, tuple[int, int, int]] = {"right": (235, 190, 160), "left": (170, 205, 235)}


def line_width(image: np.ndarray) -> int:
    """Stroke width in pixels scaled to the image size (1 px per ~320 px of the shorter side)."""
    return max(1, int(round(min(image.shape[:2]) / 320)))


def _label(img: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float, thick: int) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = img.shape[:2]
    x = int(np.clip(x, 0, max(0, w - tw - 4)))
    y = int(np.clip(y, th + base + 4, h - 1))
    cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), color, -1)
    lum = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    cv2.putText(img, text, (x + 2, y - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0) if lum > 140 else (255, 255, 255), thick, cv2.LINE_AA)


def draw_skeleton(img: np.ndarray, keypoints: np.ndarray, width: int) -> None:
    """Draw the 20 bones and 21 joints of (21, 2) pixel keypoints in place."""
    pts = np.asarray(keypoints, dtype=np.float64).reshape(21, 2)
    ok = np.all(np.isfinite(pts), axis=1) & np.all(np.abs(pts) < 1e6, axis=1)  # missing joints are skipped
    shift = 4  # sub-pixel precision for cv2
    p = np.round(np.where(ok[:, None], pts, 0.0) * (1 << shift)).astype(np.int64)
    for (a, b), color in zip(BONES, BONE_COLORS):
        if ok[a] and ok[b]:
            cv2.line(img, tuple(map(int, p[a])), tuple(map(int, p[b])), color, width + 1, cv2.LINE_AA, shift)
    r = (width + 2) * (1 << shift)
    for j, color in enumerate(JOINT_COLORS):
        if not ok[j]:
            continue
        cv2.circle(img, tuple(map(int, p[j])), r, color, -1, cv2.LINE_AA, shift)
        cv2.circle(img, tuple(map(int, p[j])), r, (30, 30, 30), 1, cv2.LINE_AA, shift)


def draw_hands(image: np.ndarray, hands: Sequence[Hand], show_boxes: bool = True, show_skeleton: bool = True,
               show_labels: bool = True, mesh_faces: np.ndarray | Callable[[str], np.ndarray] | None = None,
               K: np.ndarray | None = None, mesh_alpha: float = 0.6) -> np.ndarray:
    """A copy of `image` (H, W, 3 uint8 RGB) with each hand's mesh (optional), box, label and skeleton.

    mesh_faces: the model's faces (F, 3), or a callable handedness -> faces (e.g. `model.faces_for`);
    meshes use `hand.vertices` (camera frame, metres) projected with K (default: `default_camera`).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"draw_hands needs an (H, W, 3) image, got shape {img.shape}")
    img = np.ascontiguousarray(img.astype(np.uint8))
    h, w = img.shape[:2]
    width = line_width(img)
    if mesh_faces is not None:
        meshes = []
        for hand in hands:
            if hand.vertices is None:
                continue
            faces = mesh_faces(hand.handedness) if callable(mesh_faces) else mesh_faces
            meshes.append((np.asarray(hand.vertices, dtype=np.float32), np.asarray(faces),
                           MESH_COLORS.get(hand.handedness, MESH_COLORS["right"])))
        if meshes:
            if K is None:
                from handos.io.camera import default_camera

                K = default_camera(w, h).matrix()
            img = render_mesh(img, meshes, np.asarray(K, dtype=np.float32), alpha=mesh_alpha)
    for hand in hands:
        color = HAND_COLORS.get(hand.handedness, (255, 255, 255))
        box = np.asarray(hand.bbox_xyxy, dtype=np.float64)
        if show_boxes and np.all(np.isfinite(box)):
            cv2.rectangle(img, (int(round(box[0])), int(round(box[1]))), (int(round(box[2])), int(round(box[3]))),
                          color, width, cv2.LINE_AA)
        if show_skeleton and hand.keypoints_2d is not None:
            draw_skeleton(img, hand.keypoints_2d, width)
        if show_labels and np.all(np.isfinite(box)):
            scale = 0.45 * max(1.0, min(h, w) / 480)
            _label(img, f"{hand.handedness} {float(hand.score):.2f}", int(round(box[0])), int(round(box[1])),
                   color, scale, max(1, width // 2 + (width > 2)))
    return img


def draw_tracked_hands(image: np.ndarray, hands: Sequence[Hand],
                       mesh_faces: np.ndarray | Callable[[str], np.ndarray] | None = None,
                       K: np.ndarray | None = None) -> np.ndarray:
    """`draw_hands` (meshes if `mesh_faces`) with each hand labelled `#track side score`, for clips."""
    img = draw_hands(image, hands, show_labels=False, mesh_faces=mesh_faces, K=K)
    scale = 0.45 * max(1.0, min(img.shape[:2]) / 480)
    thick = max(1, int(round(min(img.shape[:2]) / 480)))
    for hand in hands:  # track labels, so ids can be checked by eye
        box = np.asarray(hand.bbox_xyxy, np.float64)
        if not np.all(np.isfinite(box)):
            continue
        tid = "?" if hand.track_id is None else str(hand.track_id)
        text = f"#{tid} {hand.handedness[:1].upper()} {float(hand.score):.2f}"
        _label(img, text, box[0], box[1], HAND_COLORS.get(hand.handedness, HAND_COLORS["left"]), scale, thick)
    return img
