"""The prediction schema `handos.prediction/1`: the Hand record and the per-image JSON object."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handos.errors import InputError

SCHEMA = "handos.prediction/1"

JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb1", "thumb2", "thumb3", "thumb4",
    "index1", "index2", "index3", "index4",
    "middle1", "middle2", "middle3", "middle4",
    "ring1", "ring2", "ring3", "ring4",
    "pinky1", "pinky2", "pinky3", "pinky4",
)  # FreiHAND/MANO order, each finger base -> tip

# (parent, child) pairs of the 20 bones, for drawing skeletons
BONES: tuple[tuple[int, int], ...] = tuple(
    (0 if k == 0 else 1 + 4 * f + k - 1, 1 + 4 * f + k) for f in range(5) for k in range(4)
)


@dataclass(frozen=True)
class HandTrace:
    """How the pipeline found a hand: what tracking and evaluation read back; never serialised."""

    roi: np.ndarray | None = None  # (5,) [cx, cy, w, h, rot] px: the foundation's ROI for the next frame
    roi_index: int | None = None  # index into the ROIs carried into this frame it came from; None: detected
    presence: float | None = None  # the landmark net's presence
    foundation_box: np.ndarray | None = None  # (4,) xyxy px: the foundation's padded landmark box
    handedness_raw: tuple[str, float] | None = None  # the model's (label, score) before a track's vote


@dataclass
class Hand:
    """One detected hand, in the image's pixels and the camera frame (metres, x right, y down, z forward)."""

    id: int
    score: float
    handedness: str  # "right" | "left"
    handedness_score: float
    bbox_xyxy: np.ndarray  # (4,) pixels
    keypoints_2d: np.ndarray  # (21, 2) pixels
    keypoints_score: np.ndarray  # (21,)
    joints_3d: np.ndarray  # (21, 3) metres, camera frame
    cam_t: np.ndarray  # (3,) metres, wrist position in the camera frame
    vertices: np.ndarray | None = None  # (V, 3) metres, camera frame
    track_id: int | None = None
    joints_3d_frame: str = "camera"  # "camera"; "mediapipe_world": hand-centred, no absolute position (eval)
    trace: HandTrace = field(default_factory=HandTrace)  # not serialised

    def to_dict(self, include_vertices: bool = False, decimals: int = 5) -> dict[str, Any]:
        """As a schema `hands[]` entry (plain lists and floats)."""
        r = lambda a: np.round(np.asarray(a, dtype=np.float64), decimals).tolist()  # noqa: E731
        out = {
            "id": int(self.id),
            "track_id": None if self.track_id is None else int(self.track_id),
            "score": round(float(self.score), 4),
            "handedness": self.handedness,
            "handedness_score": round(float(self.handedness_score), 4),
            "bbox_xyxy": np.round(np.asarray(self.bbox_xyxy, dtype=np.float64), 2).tolist(),
            "keypoints_2d": np.round(np.asarray(self.keypoints_2d, dtype=np.float64), 2).tolist(),
            "keypoints_score": np.round(np.asarray(self.keypoints_score, dtype=np.float64), 4).tolist(),
            "joints_3d": r(self.joints_3d),
            "joints_3d_frame": self.joints_3d_frame,
            "cam_t": r(self.cam_t),
            "vertices": r(self.vertices) if include_vertices and self.vertices is not None else None,
        }
        return out

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Hand:
        """Rebuild a Hand from a schema `hands[]` entry."""
        try:
            return Hand(
                id=int(d["id"]),
                score=float(d["score"]),
                handedness=str(d["handedness"]),
                handedness_score=float(d.get("handedness_score", 1.0)),
                bbox_xyxy=np.asarray(d["bbox_xyxy"], dtype=np.float64),
                keypoints_2d=np.asarray(d["keypoints_2d"], dtype=np.float64).reshape(21, 2),
                keypoints_score=np.asarray(d.get("keypoints_score") or [1.0] * 21, dtype=np.float64),
                joints_3d=np.asarray(d["joints_3d"], dtype=np.float64).reshape(21, 3),
                cam_t=np.asarray(d["cam_t"], dtype=np.float64),
                vertices=None if d.get("vertices") is None else np.asarray(d["vertices"], dtype=np.float64),
                track_id=d.get("track_id"),
                joints_3d_frame=str(d.get("joints_3d_frame") or "camera"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"not a handos.prediction/1 hand entry: {err}") from None


def prediction_record(
    file: str | None,
    width: int,
    height: int,
    camera: dict[str, float],
    hands: list[Hand],
    model: str,
    frame: int | None = None,
    time_s: float | None = None,
    include_vertices: bool = False,
) -> dict[str, Any]:
    """The per-image JSON object of schema handos.prediction/1."""
    return {
        "schema": SCHEMA,
        "file": file,
        "width": int(width),
        "height": int(height),
        "model": model,
        "camera": {k: round(float(v), 4) for k, v in camera.items()},
        "frame": frame,
        "time_s": None if time_s is None else round(float(time_s), 4),
        "hands": [h.to_dict(include_vertices=include_vertices) for h in hands],
    }


def validate_record(rec: dict[str, Any]) -> None:
    """Raise InputError if `rec` is not a well-formed handos.prediction/1 object."""
    if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
        raise InputError(f"not a {SCHEMA} record (schema field is {rec.get('schema') if isinstance(rec, dict) else None!r})")
    for key in ("file", "width", "height", "camera", "hands"):
        if key not in rec:
            raise InputError(f"{SCHEMA} record lacks {key!r}")
    for h in rec["hands"]:
        if len(h["keypoints_2d"]) != 21 or len(h["joints_3d"]) != 21 or h["handedness"] not in ("left", "right"):
            raise InputError(f"{SCHEMA} hand entry is malformed (needs 21 keypoints, 21 joints, handedness left/right)")
