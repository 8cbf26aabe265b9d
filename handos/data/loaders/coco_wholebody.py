"""COCO-WholeBody hands (Jin et al., ECCV 2020), the published layout::

    ROOT/annotations/coco_wholebody_{train,val}_v1.0.json   COCO json; each person annotation has
        lefthand_kpts / righthand_kpts: 21 x (x, y, v), v > 0 labelled (1 occluded, 2 visible);
        lefthand_box / righthand_box: [x, y, w, h]; lefthand_valid / righthand_valid: bool
    ROOT/{train,val}2017/<file_name>                         COCO 2017 images

The 21-point hand order is ours (wrist, thumb1..4, forefinger1..4, middle, ring, pinky; mmpose's
coco_wholebody_hand config). left/right are the person's anatomical hands (= our handedness).
2D only: no camera, no 3D.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from handos.data.loaders.base import HandDataset, Sample, remap, require

TO_OURS = np.arange(21)  # COCO-WholeBody hand order == ours


class CocoWholeBodyHands(HandDataset):
    """Images of COCO-WholeBody with at least one valid hand; one sample per image, all its valid hands."""

    name = "coco_wholebody_hands"
    license = "COCO-WholeBody annotations: see github.com/jin-s13/COCO-WholeBody; COCO images: Flickr terms"
    source = "https://github.com/jin-s13/COCO-WholeBody"

    def __init__(self, root: str | Path, split: str = "val", annotation_file: str | Path | None = None,
                 image_dir: str | Path | None = None):
        self.root = Path(root)
        ann_path = Path(annotation_file) if annotation_file else self.root / "annotations" / f"coco_wholebody_{split}_v1.0.json"
        self.image_dir = Path(image_dir) if image_dir else self.root / f"{split}2017"
        coco = json.loads(require(ann_path, "COCO-WholeBody annotation json").read_text())
        self.images = {im["id"]: im for im in coco["images"]}
        self.hands: dict[int, list[dict]] = defaultdict(list)
        for ann in coco["annotations"]:
            for side in ("left", "right"):
                if ann.get(f"{side}hand_valid"):
                    self.hands[ann["image_id"]].append(self._hand(ann, side))
        self.keys = sorted(i for i in self.hands if i in self.images)

    @staticmethod
    def _hand(ann: dict, side: str) -> dict:
        """One valid hand of a person annotation."""
        k = remap(np.asarray(ann[f"{side}hand_kpts"], dtype=np.float64).reshape(21, 3), TO_OURS)
        j2 = np.where((k[:, 2:3] > 0), k[:, :2], np.nan)  # v = 0: unlabelled
        x, y, w, h = np.asarray(ann[f"{side}hand_box"], dtype=np.float64)
        return {"handedness": side, "joints_2d": j2, "joints_3d": None, "bbox_xyxy": np.array([x, y, x + w, y + h]),
                "annotation_id": ann.get("id")}

    def _load(self, image_id: int) -> Sample:
        """One image with all its valid hands."""
        im = self.images[image_id]
        hands = [{k: v for k, v in h.items() if k != "annotation_id"} for h in self.hands[image_id]]
        meta = {"image_id": image_id, "annotation_ids": [h["annotation_id"] for h in self.hands[image_id]]}
        return {"image_path": str(self.image_dir / im["file_name"]), "width": int(im["width"]), "height": int(im["height"]),
                "camera": None, "hands": hands, "meta": meta}
