"""What the demo keeps between events (an image's or a clip's results) and the helpers both views share."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demo.overlays import handedness_text
from handos.io.camera import Camera
from handos.io.schema import Hand

TABLE_HEADERS = ["hand", "handedness", "handedness score", "detection score", "x1", "y1", "x2", "y2"]


@dataclass
class ImageResult:
    """One image's unfiltered prediction, kept per session so redraws need no model run."""

    path: str  # the uploaded file on the server
    name: str  # the file name the user gave
    hands: list[Hand]
    camera: Camera
    width: int
    height: int
    model_version: str
    faces: dict[str, np.ndarray]  # handedness -> (F, 3)
    seconds: float
    device: str
    notes: list[str] = field(default_factory=list)  # how it was found / loaded (retry, downscale), for the status


@dataclass
class ClipResult:
    """A processed clip: per-frame hands for the 3D view, and the files written."""

    frames: list[list[Hand]]
    fps: float
    faces: dict[str, np.ndarray]
    files: list[str] = field(default_factory=list)
    name: str = "clip"
    summary: Any = None  # handos.video.clip.ClipSummary
    threshold: float = 0.0
    current: int = 0  # the frame shown in the 3D view
    path: str = ""  # the uploaded clip on the server (re-read to redraw the video)
    times: list[float] = field(default_factory=list)  # each frame's time in the clip, s
    frame_index: list[int] = field(default_factory=list)  # each kept frame's index in the clip
    camera: Camera | None = None
    max_hands: int = 4
    layers: tuple[str, ...] = ()
    renders: int = 0  # annotated videos written so far (each gets a new name)


def select_hands(hands: Sequence[Hand], threshold: float, max_hands: int) -> list[Hand]:
    """Hands scoring at least `threshold`, best first, at most `max_hands`."""
    kept = sorted((h for h in hands if float(h.score) >= float(threshold)), key=lambda h: -float(h.score))
    return kept[: max(0, int(max_hands))]


def hands_table(hands: Sequence[Hand]) -> list[list[Any]]:
    """Rows of the hands table: id, handedness ('left?' when unsure), handedness score, detection score, box."""
    return [
        [int(h.id), handedness_text(h), round(float(h.handedness_score), 3), round(float(h.score), 3),
         *[round(float(v), 1) for v in np.asarray(h.bbox_xyxy).reshape(4)]]
        for h in hands
    ]


def below_threshold(hands: Sequence[Hand], threshold: float) -> int:
    """How many candidates score under the threshold."""
    return sum(float(h.score) < float(threshold) for h in hands)


def faces_of(model: Any) -> dict[str, np.ndarray]:
    """Both handedness' faces from the model, once."""
    return {side: np.asarray(model.faces_for(side)) for side in ("right", "left")}


__all__ = ["TABLE_HEADERS", "ClipResult", "ImageResult", "below_threshold", "faces_of", "hands_table", "select_hands"]
