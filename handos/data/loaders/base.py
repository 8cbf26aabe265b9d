"""What every dataset loader yields, shared geometry helpers, and the writer of derived_annotations.json.

A sample is a plain dict::

    {"image_path": str, "width": int, "height": int, "camera": {"fx","fy","cx","cy"} | None,
     "hands": [{"handedness": "left" | "right" | None,
                "joints_2d": (21, 2) px, NaN where unlabelled,
                "joints_3d": (21, 3) mm camera frame (x right, y down, z forward) | None,
                "bbox_xyxy": (4,) px}, ...],
     "meta": {...}}                      # dataset-specific extras (ids, MANO parameters, ...)

Joints are always in our order (`handos.io.schema.JOINT_NAMES`, FreiHAND/MANO order); each loader
converts with an index array `ours = src[..., TO_OURS, :]`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from handos.errors import InputError
from handos.geometry import project as _project
from handos.hand.skeleton import NUM_JOINTS
from handos.io.schema import JOINT_NAMES


class HandLabel(TypedDict, total=False):
    """One annotated hand of a sample."""

    handedness: str | None
    joints_2d: np.ndarray  # (21, 2) px, NaN = unlabelled
    joints_3d: np.ndarray | None  # (21, 3) mm, camera frame
    bbox_xyxy: np.ndarray  # (4,) px


class Sample(TypedDict, total=False):
    """One image with its hands."""

    image_path: str
    width: int
    height: int
    camera: dict[str, float] | None
    hands: list[HandLabel]
    meta: dict[str, Any]


def remap(src: np.ndarray, to_ours: np.ndarray | list[int]) -> np.ndarray:
    """Reorder the joint axis (-2) of `src` (..., 21, D) into our order: ours[i] = src[to_ours[i]]."""
    return np.asarray(src)[..., np.asarray(to_ours), :]


def camera_from_matrix(k: np.ndarray) -> dict[str, float]:
    """{fx, fy, cx, cy} from a 3x3 intrinsic matrix."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    return {"fx": float(k[0, 0]), "fy": float(k[1, 1]), "cx": float(k[0, 2]), "cy": float(k[1, 2])}


def project(points: np.ndarray, camera: dict[str, float]) -> np.ndarray:
    """Pinhole projection of camera-frame points (..., 3) (any unit) to pixels (..., 2)."""
    intrinsics = np.array([camera["fx"], camera["fy"], camera["cx"], camera["cy"]], dtype=np.float64)  # (4,)
    return _project(np.asarray(points, dtype=np.float64), intrinsics)


def tight_box(joints_2d: np.ndarray) -> np.ndarray:
    """(4,) xyxy box of the labelled (finite) joints; NaN if none."""
    j = np.asarray(joints_2d, dtype=np.float64).reshape(-1, 2)
    ok = np.isfinite(j).all(-1)
    if not ok.any():
        return np.full(4, np.nan)
    return np.concatenate([j[ok].min(0), j[ok].max(0)])


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the image header (the pixels are not decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the image header ({err})") from None


def require(path: Path, what: str) -> Path:
    """`path` if it exists, else an InputError naming the dataset layout piece that is missing."""
    if not path.exists():
        raise InputError(f"{path}: not found ({what}); check the dataset root and its published layout")
    return path


class HandDataset:
    """Base class: an indexable, iterable collection of samples with a derived_annotations.json writer."""

    name = "dataset"
    license = ""
    source = ""

    def __len__(self) -> int:
        """Number of samples."""
        return len(self._index())

    def __getitem__(self, i: int) -> Sample:
        """Sample `i`."""
        return self._load(self._index()[i])

    def __iter__(self) -> Iterator[Sample]:
        """All samples in order."""
        for key in self._index():
            yield self._load(key)

    keys: list  # one key per sample, built once by the subclass's __init__

    def _index(self) -> list:
        """Keys of the samples."""
        return self.keys

    def _load(self, key: Any) -> Sample:
        """The sample for one key."""
        raise NotImplementedError

    def as_eval_annotations(self, out_path: str | os.PathLike, limit: int | None = None, notes: str = "") -> Path:
        """Write the first `limit` samples (with at least one hand) as a derived_annotations.json (the `handos eval` format)."""
        samples = islice((s for s in self if s["hands"]), limit)
        return write_eval_annotations(samples, out_path, dataset=self.name, source=self.source, license=self.license, notes=notes)


def _round(a: np.ndarray | None, digits: int = 3) -> Any:
    """Nested lists with NaN rows -> None (unlabelled joints), rounded."""
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float64)
    return [None if not np.isfinite(row).all() else [round(float(v), digits) for v in row] for row in a]


def write_eval_annotations(
    samples: Iterable[Sample],
    out_path: str | os.PathLike,
    dataset: str,
    source: str = "",
    license: str = "",
    notes: str = "",
) -> Path:
    """Write samples in the derived_annotations.json format; image paths become relative to the json's folder."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    images = []
    for s in samples:
        hands = []
        for h in s["hands"]:
            j2 = np.asarray(h["joints_2d"], dtype=np.float64).reshape(NUM_JOINTS, 2)
            box = tight_box(j2)
            if np.isfinite(j2).all(-1).sum() < 2 and h.get("bbox_xyxy") is not None:
                box = np.asarray(h["bbox_xyxy"], dtype=np.float64)  # too few joints for a box
            entry = {
                "handedness": h.get("handedness"),
                "bbox_xyxy": [round(float(v), 2) for v in box],
                "joints_2d": _round(j2, 2),
                "joints_3d": _round(h.get("joints_3d"), 3),
            }
            if not np.isfinite(j2).all():
                entry["joints_2d_visible"] = np.isfinite(j2).all(-1).tolist()
            hands.append(entry)
        images.append({
            "file": os.path.relpath(Path(s["image_path"]).resolve(), base),
            "width": int(s["width"]),
            "height": int(s["height"]),
            "camera": None if s.get("camera") is None else {k: round(float(v), 4) for k, v in s["camera"].items()},
            "hands": hands,
        })
    doc = {
        "dataset": dataset,
        "source": source,
        "license": license,
        "joint_order": list(JOINT_NAMES),
        "units": {"joints_3d": "mm, camera frame (x right, y down, z forward)", "joints_2d": "px"},
        "notes": notes,
        "images": images,
    }
    out.write_text(json.dumps(doc, separators=(",", ":")))
    return out
