"""Dataset loaders for users who have the data: each yields uniform sample dicts (see `base`) in our joint
order and units (2D px, 3D mm camera frame), and can write the eval contract's derived_annotations.json.

>>> from handos.data.loaders import load_dataset
>>> ds = load_dataset("freihand", "/data/FreiHAND_pub_v2", split="evaluation")
>>> ds.as_eval_annotations("/data/freihand_eval/derived_annotations.json", limit=500)
"""
from __future__ import annotations

from typing import Any

from handos.data.loaders.base import HandDataset, HandLabel, Sample, write_eval_annotations
from handos.data.loaders.coco_wholebody import CocoWholeBodyHands
from handos.data.loaders.dexycb import DexYCB
from handos.data.loaders.freihand import FreiHAND
from handos.data.loaders.hint import HamerNpz, HInt
from handos.data.loaders.ho3d import HO3D

LOADERS: dict[str, type[HandDataset]] = {
    "freihand": FreiHAND,
    "ho3d": HO3D,
    "dexycb": DexYCB,
    "coco_wholebody": CocoWholeBodyHands,
    "hint": HInt,
}

__all__ = ["LOADERS", "load_dataset", "HandDataset", "HandLabel", "Sample", "write_eval_annotations",
           "FreiHAND", "HO3D", "DexYCB", "CocoWholeBodyHands", "HInt", "HamerNpz"]


def load_dataset(name: str, root: str, **kwargs: Any) -> HandDataset:
    """A loader by name (one of LOADERS) over the dataset at `root`."""
    from handos.errors import InputError

    if name not in LOADERS:
        raise InputError(f"unknown dataset {name!r}; one of: {', '.join(LOADERS)}")
    return LOADERS[name](root, **kwargs)
