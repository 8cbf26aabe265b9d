"""HInt: Hand Interactions in the wild (Pavlakos et al., HaMeR, CVPR 2024), two layouts.

1. The released annotation folders (github.com/ddshan/hint, `HInt_annotation[_partial].zip`)::

       ROOT/{TRAIN,VAL,TEST}_{newdays,epick,ego4d}_img/NAME.jpg + NAME.json   (ego4d frames fetched separately)

   NAME.json is a list of hands, as read by the repo's visualize_HInt/draw_hand.py:
   [{"keypoints": 21 x (x, y), "bbox": [[x1, y1, x2, y2]], "occlusion": 21 x 0/1 (1 = occluded)}, ...].
   Handedness is not a json field there: the file names end in `_l` / `_r` (e.g.
   `..._pre_frame_l.jpg`), which is what we read; a per-hand "right"/"is_right"/"handedness"/
   "hand_side" field is honoured if present. The keypoint order is COCO-WholeBody's hand order
   (the repo's coco_wholebody_hand.py) = ours. Occluded keypoints are still labelled positions; the
   occlusion flags are kept in `hand["occluded"]`. A third keypoint column, if present, is a
   confidence: 0 = unlabelled.
2. HaMeR's evaluation files (`hamer_evaluation_data/TEST_{ego4d,epick,newdays}_img_{all,vis,occ}.npz`,
   read by hamer/datasets/image_dataset.py): imgname (N,), center (N,2), scale (N,) or (N,2) px box side,
   right (N,) 1/0, hand_keypoints_2d (N,21,3) with confidence (0 = unlabelled); OpenPose hand order = ours.

Both are 2D only (no camera, no 3D).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from handos.data.loaders.base import HandDataset, Sample, image_size, remap, require, tight_box
from handos.hand.skeleton import NUM_JOINTS

TO_OURS = np.arange(21)  # COCO-WholeBody / OpenPose hand order == ours
SOURCES = ("newdays", "epick", "ego4d")
_SIDE_KEYS = ("handedness", "hand_side", "side", "right", "is_right")


def _side_from_value(v) -> str | None:
    """'left'/'right' from a json handedness value (string or right-flag)."""
    if isinstance(v, str):
        s = v.strip().lower()
        return "right" if s in ("r", "right") else "left" if s in ("l", "left") else None
    if isinstance(v, (bool, int, float)):
        return "right" if v else "left"
    return None


def side_from_name(stem: str) -> str | None:
    """HInt file names end in _l / _r."""
    s = stem.lower()
    return "left" if s.endswith("_l") else "right" if s.endswith("_r") else None


def _keypoints(raw) -> np.ndarray:
    """(21, 2) px with NaN for unlabelled, from a 21 x 2 or 21 x 3 list (None entries allowed)."""
    rows = [[np.nan] * 3 if p is None else (list(p) + [1.0])[:3] for p in raw]
    k = np.asarray(rows, dtype=np.float64).reshape(21, 3)
    return np.where(k[:, 2:3] > 0, k[:, :2], np.nan)


def _box(raw) -> np.ndarray | None:
    """xyxy from [[x1,y1,x2,y2]] or [x1,y1,x2,y2]."""
    if raw is None:
        return None
    b = np.asarray(raw, dtype=np.float64).reshape(-1)
    return b[:4] if b.size >= 4 else None


class HInt(HandDataset):
    """The released HInt folders of one split (TRAIN / VAL / TEST) and some sources; one sample per image."""

    name = "hint"
    license = "HInt annotations: see github.com/ddshan/hint; images: New Days / Epic-Kitchens VISOR / Ego4D terms"
    source = "https://github.com/ddshan/hint"

    def __init__(self, root: str | Path, split: str = "TEST", sources: tuple[str, ...] = SOURCES):
        self.root = Path(root)
        split = split.upper()
        folders = [self.root / f"{split}_{s}_img" for s in sources]
        if not any(f.is_dir() for f in folders):
            require(folders[0], f"HInt {split} folder")
        self.keys = sorted(j.with_suffix(".jpg") for f in folders if f.is_dir() for j in f.glob("*.json")
                           if j.with_suffix(".jpg").exists())

    def _load(self, image: Path) -> Sample:
        """One image and its hands."""
        doc = json.loads(image.with_suffix(".json").read_text())
        entries = doc if isinstance(doc, list) else [doc]
        w, h = image_size(image)
        hands = []
        for e in entries:
            j2 = remap(_keypoints(e["keypoints"]), TO_OURS)
            side = next((_side_from_value(e[k]) for k in _SIDE_KEYS if k in e), None) or side_from_name(image.stem)
            box = _box(e.get("bbox"))
            hand = {"handedness": side, "joints_2d": j2, "joints_3d": None, "bbox_xyxy": tight_box(j2) if box is None else box}
            if e.get("occlusion") is not None:
                hand["occluded"] = remap(np.asarray(e["occlusion"], dtype=bool).reshape(21, 1), TO_OURS)[:, 0]
            hands.append(hand)
        meta = {"subset": image.parent.name, "name": image.stem}
        return {"image_path": str(image), "width": w, "height": h, "camera": None, "hands": hands, "meta": meta}


class HamerNpz(HandDataset):
    """A HaMeR-style evaluation npz (e.g. HInt's TEST_newdays_img_all.npz) with its image folder; one hand per entry."""

    name = "hint_hamer_npz"
    license = HInt.license
    source = "https://github.com/geopavlakos/hamer"

    def __init__(self, npz_file: str | Path, image_dir: str | Path):
        data = np.load(require(Path(npz_file), "HaMeR evaluation npz"), allow_pickle=True)
        self.image_dir = Path(image_dir)
        self.imgname = [n.decode() if isinstance(n, bytes) else str(n) for n in data["imgname"]]
        n = len(self.imgname)
        self.center = np.asarray(data["center"], dtype=np.float64).reshape(n, 2)
        self.scale = np.asarray(data["scale"], dtype=np.float64).reshape(n, -1)
        self.right = np.asarray(data["right"], dtype=np.float64).reshape(n) if "right" in data else np.ones(n)
        kp = data["hand_keypoints_2d"] if "hand_keypoints_2d" in data else np.zeros((n, NUM_JOINTS, 3))
        self.keypoints = np.asarray(kp, dtype=np.float64).reshape(n, NUM_JOINTS, -1)
        self.keys = list(range(n))

    def _load(self, i: int) -> Sample:
        """Entry i."""
        k = remap(self.keypoints[i], TO_OURS)
        conf = k[:, 2:3] if k.shape[-1] > 2 else np.ones((21, 1))
        j2 = np.where(conf > 0, k[:, :2], np.nan)
        half = self.scale[i].max() / 2.0
        box = np.r_[self.center[i] - half, self.center[i] + half]
        path = self.image_dir / self.imgname[i]
        w, h = image_size(path)
        hand = {"handedness": "right" if self.right[i] > 0.5 else "left", "joints_2d": j2, "joints_3d": None, "bbox_xyxy": box}
        return {"image_path": str(path), "width": w, "height": h, "camera": None, "hands": [hand], "meta": {"index": i}}
