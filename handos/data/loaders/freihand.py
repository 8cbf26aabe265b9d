"""FreiHAND (Zimmermann et al., ICCV 2019), the published v2 layout::

    ROOT/training_xyz.json    [N][21][3]  metres, camera frame (OpenCV: x right, y down, z forward)
    ROOT/training_K.json      [N][3][3]   intrinsics
    ROOT/training_mano.json   [N][1][61]  MANO pose (48) + shape (10) + translation (3)
    ROOT/training/rgb/%08d.jpg            4 x N images: index v * N + i is version v of sample i
    ROOT/evaluation_{xyz,K,mano}.json, ROOT/evaluation/rgb/%08d.jpg

Joint order is already ours (wrist, thumb1..4, index1..4, ...; mmpose's freihand2d config lists the same).
All hands are right hands. 2D joints are the projection of the 3D joints with K.
"""
from __future__ import annotations

import json
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

TO_OURS = np.arange(21)  # FreiHAND order == ours
VERSIONS = ("gs", "hom", "sample", "auto")  # the 4 appearance variants of the training images


class FreiHAND(HandDataset):
    """FreiHAND training or evaluation split; `versions` picks training image variants (default: those present)."""

    name = "freihand"
    license = "FreiHAND: research only (University of Freiburg)"
    source = "https://lmb.informatik.uni-freiburg.de/projects/freihand/"

    def __init__(self, root: str | Path, split: str = "training", versions: tuple[int, ...] | None = None):
        self.root = Path(root)
        if split not in ("training", "evaluation"):
            raise ValueError(f"split must be 'training' or 'evaluation', got {split!r}")
        self.split = split
        self.xyz = np.asarray(json.loads(require(self.root / f"{split}_xyz.json", "3D joints").read_text()), dtype=np.float64)
        self.K = np.asarray(json.loads(require(self.root / f"{split}_K.json", "intrinsics").read_text()), dtype=np.float64)
        mano_file = self.root / f"{split}_mano.json"
        self.mano = np.asarray(json.loads(mano_file.read_text()), dtype=np.float64).reshape(len(self.xyz), -1) if mano_file.exists() else None
        n = len(self.xyz)
        self.image_dir = require(self.root / split / "rgb", "image folder")
        if versions is None:
            versions = tuple(v for v in range(len(VERSIONS) if split == "training" else 1) if self._image(v * n).exists())
        self.keys = [v * n + i for v in versions for i in range(n)]

    def _image(self, k: int) -> Path:
        """Path of image number k."""
        return self.image_dir / f"{k:08d}.jpg"

    def _load(self, k: int) -> Sample:
        """Image k: annotation k mod N."""
        i = k % len(self.xyz)
        cam = camera_from_matrix(self.K[i])
        j3 = remap(self.xyz[i], TO_OURS) * 1000.0  # (21, 3) mm
        j2 = project(j3, cam)
        path = self._image(k)
        w, h = image_size(path)
        meta = {"index": i, "version": VERSIONS[k // len(self.xyz)] if k // len(self.xyz) < len(VERSIONS) else None}
        if self.mano is not None:
            meta["mano"] = self.mano[i]
        hand = {"handedness": "right", "joints_2d": j2, "joints_3d": j3, "bbox_xyxy": tight_box(j2)}
        return {"image_path": str(path), "width": w, "height": h, "camera": cam, "hands": [hand], "meta": meta}
