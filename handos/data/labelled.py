"""People's labels for fine-tuning: `handos label --export` files (COCO-WholeBody style) and
derived_annotations.json files, read into one form (`LabelledImage`), split, and turned back into eval
annotations so `handos.eval` scores the held-out part.

COCO export: `images[]` (`file_name` relative to the file's folder or absolute, `width`, `height`, `camera`
or null) and `annotations[]` (`image_id`, `bbox` xywh, `keypoints` [x, y, v] x 21 with v = 0 unlabelled,
`handedness`, optional `joints_3d` (21 x 3, mm, camera frame) for people who have 3D).
derived_annotations.json: `images[]` with `file`, `camera`, `hands[]` (`joints_2d` px with nulls,
`joints_3d` mm or null, `bbox_xyxy`, `handedness`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handos.errors import InputError
from handos.hand.skeleton import NUM_JOINTS


@dataclass
class LabelledHand:
    """One labelled hand: 2D joints (21,2) px (NaN where unlabelled), optional 3D (21,3) metres, camera frame."""

    joints_2d: np.ndarray
    joints_3d: np.ndarray | None = None
    bbox_xyxy: np.ndarray | None = None
    handedness: str | None = None

    @property
    def visible(self) -> np.ndarray:
        """(21,) bool: labelled joints."""
        return np.isfinite(self.joints_2d).all(-1)

    def box(self) -> np.ndarray:
        """The hand's box xyxy: given, else the tight box of its labelled joints."""
        if self.bbox_xyxy is not None:
            return self.bbox_xyxy
        p = self.joints_2d[self.visible]
        return np.concatenate([p.min(0), p.max(0)])


@dataclass
class LabelledImage:
    """One image with its hands; `path` absolute; `camera` {fx, fy, cx, cy} or None."""

    path: Path
    width: int
    height: int
    camera: dict | None
    hands: list[LabelledHand] = field(default_factory=list)


@dataclass
class LabelledData:
    """A whole labelled file: its images, a name and the licence it states (if any)."""

    images: list[LabelledImage]
    name: str
    licence: str | None
    source: str


def _hand_3d(values: Any) -> np.ndarray | None:
    """21 x 3 mm -> (21,3) metres, or None."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (NUM_JOINTS, 3) or not np.isfinite(arr).all():
        return None
    return arr / 1000.0


def _joints_2d(values: list) -> np.ndarray:
    """21 entries [x, y] or None -> (21,2) with NaN for missing."""
    out = np.full((NUM_JOINTS, 2), np.nan)
    for j, p in enumerate(values):
        if p is not None:
            out[j] = p[:2]
    return out


def _from_coco(raw: dict, root: Path) -> list[LabelledImage]:
    """images + annotations of an export file."""
    by_id: dict[Any, LabelledImage] = {}
    order = []
    for im in raw["images"]:
        name = im.get("file_name")
        if not name:
            continue  # images only on Label Studio (no local file) cannot be trained on
        p = Path(name)
        li = LabelledImage(p if p.is_absolute() else root / p, int(im["width"]), int(im["height"]), im.get("camera"))
        by_id[im["id"]] = li
        order.append(li)
    for ann in raw.get("annotations", []):
        li = by_id.get(ann.get("image_id"))
        if li is None:
            continue
        k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(NUM_JOINTS, 3)
        j2d = np.where(k[:, 2:3] > 0, k[:, :2], np.nan)
        x, y, w, h = (float(v) for v in ann.get("bbox") or [0, 0, 0, 0])
        box = np.array([x, y, x + w, y + h]) if w > 0 and h > 0 else None
        li.hands.append(LabelledHand(j2d, _hand_3d(ann.get("joints_3d")), box, ann.get("handedness")))
    return order


def _from_derived(raw: dict, root: Path) -> list[LabelledImage]:
    """images of a derived_annotations.json file."""
    out = []
    for im in raw["images"]:
        p = Path(im["file"])
        hands = [LabelledHand(_joints_2d(h["joints_2d"]), _hand_3d(h.get("joints_3d")),
                              None if h.get("bbox_xyxy") is None else np.asarray(h["bbox_xyxy"], dtype=np.float64),
                              h.get("handedness")) for h in im.get("hands", [])]
        out.append(LabelledImage(p if p.is_absolute() else root / p, int(im.get("width") or 0),
                                 int(im.get("height") or 0), im.get("camera"), hands))
    return out


def load_labelled(path: str | Path) -> LabelledData:
    """Read an export (COCO-WholeBody style) or a derived_annotations.json file; InputError if unusable."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such labels file (give what `handos label --export` wrote, or a derived_annotations.json)")
    try:
        raw = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list):
        raise InputError(f"{path}: no 'images' list; expected a `handos label --export` or derived_annotations.json file")
    root = p.resolve().parent
    try:
        if "annotations" in raw:
            images, source = _from_coco(raw, root), "coco"
        else:
            images, source = _from_derived(raw, root), "derived"
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: malformed entry ({type(err).__name__}: {err})") from None
    images = [im for im in images if any(h.visible.sum() >= 6 for h in im.hands)]
    if not images:
        raise InputError(f"{path}: no image with a labelled hand (6+ joints); nothing to fine-tune on")
    missing = [im.path for im in images if not im.path.is_file()]
    if missing:
        raise InputError(f"{path}: {len(missing)} image(s) missing, e.g. {missing[0]} (paths are relative to the file's folder)")
    info = raw.get("info") or {}
    licence = raw.get("license") or raw.get("licence") or info.get("license")
    name = raw.get("dataset") or info.get("description") or p.stem
    return LabelledData(images, str(name), None if licence is None else str(licence), source)


def split_images(images: list[LabelledImage], val_frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train / validation split (indices); at least one image in each when there are two or more."""
    if not 0.0 <= val_frac < 1.0:
        raise InputError(f"--val-frac must be in [0, 1), got {val_frac}")
    n = len(images)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_frac))
    if val_frac > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def to_eval_annotations(images: list[LabelledImage], name: str) -> dict[str, Any]:
    """The images as handos eval annotations (derived_annotations.json form, absolute file paths; root '/')."""
    out = []
    for im in images:
        hands = []
        for h in im.hands:
            hands.append({"handedness": h.handedness, "bbox_xyxy": [float(v) for v in h.box()],
                          "joints_2d": [None if not np.isfinite(p).all() else [float(p[0]), float(p[1])] for p in h.joints_2d],
                          "joints_3d": None if h.joints_3d is None else (h.joints_3d * 1000.0).tolist()})
        out.append({"file": str(im.path), "width": im.width, "height": im.height, "camera": im.camera, "hands": hands})
    return {"dataset": name, "images": out}


def read_rgb(path: Path, grayscale: bool = False) -> np.ndarray:
    """An image as (H,W,3) uint8 RGB; with `grayscale`, its luma replicated to three channels."""
    from handos.io.images import load_image

    rgb = load_image(path).rgb
    return to_grayscale(rgb) if grayscale else rgb


def to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 RGB -> the same image in grey (ITU-R BT.601 luma in all three channels)."""
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return np.repeat(g[..., None], 3, axis=2)


__all__ = ["LabelledHand", "LabelledImage", "LabelledData", "load_labelled", "split_images", "to_eval_annotations",
           "read_rgb", "to_grayscale"]
