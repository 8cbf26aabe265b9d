"""DexYCB (Chao et al., CVPR 2021), the published layout (`DEX_YCB_DIR`)::

    ROOT/SUBJECT/SEQUENCE/meta.yml                 mano_sides: [right|left], mano_calib, ycb_ids, num_frames, ...
    ROOT/SUBJECT/SEQUENCE/SERIAL/color_%06d.jpg    640x480
    ROOT/SUBJECT/SEQUENCE/SERIAL/labels_%06d.npz   joint_3d (1,21,3) m camera frame, joint_2d (1,21,2) px
                                                   (all -1 when the hand is not in the frame), pose_m, seg, ...
    ROOT/calibration/intrinsics/SERIAL_640x480.yml color: {fx, fy, ppx, ppy}

Joint order (dex_ycb_toolkit `_MANO_JOINTS`): wrist, thumb mcp/pip/dip/tip, index, middle, ring, little
(each base -> tip) = ours, so the map is the identity. Coordinates are OpenCV camera frame (metres).
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from handos.data.loaders.base import HandDataset, Sample, remap, require, tight_box

TO_OURS = np.arange(21)  # DexYCB (MANO 21-joint order with tips) == ours


@cache
def _read_yaml(path: str) -> dict:
    """A small YAML file (cached: many frames share one)."""
    import yaml  # PyYAML (a dependency of huggingface_hub)

    with open(path) as f:
        return yaml.safe_load(f)


class DexYCB(HandDataset):
    """All labelled frames under ROOT (optionally only some subjects / serials)."""

    name = "dexycb"
    license = "DexYCB: CC BY-NC 4.0 (NVIDIA)"
    source = "https://dex-ycb.github.io/"

    def __init__(self, root: str | Path, subjects: list[str] | None = None, serials: list[str] | None = None,
                 width: int = 640, height: int = 480):
        self.root = Path(root)
        self.size = (width, height)
        require(self.root / "calibration" / "intrinsics", "DexYCB calibration/intrinsics")
        keys = []
        for subject in sorted(subjects or [p.name for p in self.root.iterdir() if p.is_dir() and p.name != "calibration" and p.name != "models"]):
            keys += sorted(self.root.glob(f"{subject}/*/*/color_*.jpg"))
        if serials is not None:
            keys = [k for k in keys if k.parent.name in set(serials)]
        self.keys = keys

    def camera(self, serial: str) -> dict[str, float]:
        """The color camera intrinsics of one serial."""
        w, h = self.size
        intr = _read_yaml(str(require(self.root / "calibration" / "intrinsics" / f"{serial}_{w}x{h}.yml", "intrinsics")))["color"]
        return {"fx": float(intr["fx"]), "fy": float(intr["fy"]), "cx": float(intr["ppx"]), "cy": float(intr["ppy"])}

    def _load(self, color: Path) -> Sample:
        """One frame of one camera."""
        serial_dir, seq_dir = color.parent, color.parent.parent
        frame = color.stem.split("_")[-1]
        meta = _read_yaml(str(require(seq_dir / "meta.yml", "sequence meta.yml")))
        label = np.load(require(serial_dir / f"labels_{frame}.npz", "labels npz"))
        j3 = np.asarray(label["joint_3d"], dtype=np.float64).reshape(21, 3)
        j2 = np.asarray(label["joint_2d"], dtype=np.float64).reshape(21, 2)
        hands = []
        if not np.all(j3 == -1):
            j3 = remap(j3, TO_OURS) * 1000.0  # mm
            j2 = remap(j2, TO_OURS)
            side = str(meta["mano_sides"][0])
            hands.append({"handedness": side, "joints_2d": j2, "joints_3d": j3, "bbox_xyxy": tight_box(j2)})
        w, h = self.size
        extra = {"subject": seq_dir.parent.name, "sequence": seq_dir.name, "serial": serial_dir.name, "frame": int(frame)}
        return {"image_path": str(color), "width": w, "height": h, "camera": self.camera(serial_dir.name), "hands": hands, "meta": extra}
