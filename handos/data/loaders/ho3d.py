"""HO-3D v3 (Hampali et al., CVPR 2020; v3 2021), the published layout::

    ROOT/train/SEQ/rgb/NNNN.jpg       640x480 (v2: .png)
    ROOT/train/SEQ/meta/NNNN.pkl      dict: handJoints3D (21,3) m, camMat (3,3), handPose (48,),
                                       handTrans (3,), handBeta (10,), objRot, objTrans, objName, ...
    ROOT/evaluation/SEQ/...           meta: handJoints3D (3,) root only, handBoundingBox (4,) xyxy
    ROOT/train.txt, ROOT/evaluation.txt  "SEQ/NNNN" per line (optional here)

Conventions (from github.com/shreyashampali/ho3d, vis_HO3D.py / utils/vis_utils.py):
- 3D is in the OpenGL camera frame (y up, hand along -z); ours is OpenCV (y down, z forward):
  x_cv = x_gl, y_cv = -y_gl, z_cv = -z_gl.
- handJoints3D follows MANO's joint order with the 5 tips appended: 0 wrist, 1-3 index, 4-6 middle,
  7-9 pinky, 10-12 ring, 13-15 thumb, 16-20 tips (thumb, index, middle, ring, pinky). The repo's
  `jointsMapManoToSimple` = TO_OURS below turns it into ours.
- All HO-3D hands are right hands. Frames whose handJoints3D is None have no hand annotation.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from handos.data.loaders.base import (
    HandDataset,
    Sample,
    camera_from_matrix,
    image_size,
    project,
    remap,
    require,
    tight_box,
)

TO_OURS = np.array([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20])
GL_TO_CV = np.array([1.0, -1.0, -1.0])  # flip y and z


def load_pickle(path: Path) -> dict:
    """An HO-3D meta pickle (written by Python 2: latin1 strings)."""
    with open(path, "rb") as f:
        try:
            return pickle.load(f, encoding="latin1")
        except UnicodeDecodeError:  # pragma: no cover - py3 pickles
            f.seek(0)
            return pickle.load(f)


class HO3D(HandDataset):
    """HO-3D v3 'train' (full 21-joint 3D) or 'evaluation' (root joint + hand box only) split."""

    name = "ho3d_v3"
    license = "HO-3D: academic research only, no redistribution (TU Graz)"
    source = "https://github.com/shreyashampali/ho3d"

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        if split not in ("train", "evaluation"):
            raise ValueError(f"split must be 'train' or 'evaluation', got {split!r}")
        self.split = split
        split_dir = require(self.root / split, f"HO-3D {split} folder")
        listing = self.root / f"{split}.txt"
        if listing.exists():
            self.keys = [tuple(line.strip().split("/")) for line in listing.read_text().splitlines() if line.strip()]
        else:
            self.keys = sorted((p.parent.parent.name, p.stem) for p in split_dir.glob("*/meta/*.pkl"))

    def _rgb(self, seq: str, fid: str) -> Path:
        """The frame's image (.jpg in v3, .png in v2)."""
        base = self.root / self.split / seq / "rgb" / fid
        jpg = base.with_suffix(".jpg")
        return jpg if jpg.exists() else base.with_suffix(".png")

    def _load(self, key: tuple[str, str]) -> Sample:
        """One frame."""
        seq, fid = key
        meta = load_pickle(require(self.root / self.split / seq / "meta" / f"{fid}.pkl", "HO-3D meta pickle"))
        path = self._rgb(seq, fid)
        w, h = image_size(path)
        cam = camera_from_matrix(meta["camMat"])
        joints = meta.get("handJoints3D")
        hands = []
        extra = {"seq": seq, "frame": fid}
        if joints is not None:
            joints = np.asarray(joints, dtype=np.float64)
            if joints.size == 63:  # train: all 21 joints
                j3 = remap(joints.reshape(21, 3) * GL_TO_CV, TO_OURS) * 1000.0  # (21, 3) mm, OpenCV frame
                j2 = project(j3, cam)
                hands.append({"handedness": "right", "joints_2d": j2, "joints_3d": j3, "bbox_xyxy": tight_box(j2)})
                for k in ("handPose", "handTrans", "handBeta"):
                    if meta.get(k) is not None:
                        extra[k] = np.asarray(meta[k], dtype=np.float64)
            else:  # evaluation: the root (wrist) joint only
                root = joints.reshape(3) * GL_TO_CV * 1000.0
                j2 = np.full((21, 2), np.nan)
                j2[0] = project(root, cam)
                box = np.asarray(meta.get("handBoundingBox", tight_box(j2)), dtype=np.float64)
                hands.append({"handedness": "right", "joints_2d": j2, "joints_3d": None, "bbox_xyxy": box})
                extra["root_3d_mm"] = root
        return {"image_path": str(path), "width": w, "height": h, "camera": cam, "hands": hands, "meta": extra}
