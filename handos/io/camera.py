"""Pinhole cameras: intrinsics from the user, from EXIF, or a documented default field of view."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from handos.errors import InputError

# Default when neither the user nor EXIF gives a focal length: a 55 degree field of view across
# the image's longer side (a typical phone main camera is 60-70 deg, webcams 55-65 deg).
DEFAULT_FOV_DEG = 55.0


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels; x right, y down, z forward."""

    fx: float
    fy: float
    cx: float
    cy: float

    def matrix(self) -> np.ndarray:
        """The 3x3 intrinsic matrix K."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def to_dict(self) -> dict[str, float]:
        """As the schema's `camera` object."""
        return {k: float(v) for k, v in asdict(self).items()}

    @staticmethod
    def from_any(value: Camera | dict | None, width: int, height: int, exif_focal_35mm: float | None = None) -> Camera:
        """A Camera from a Camera, a {fx,fy,cx,cy} dict (cx/cy optional), EXIF, or the default."""
        if isinstance(value, Camera):
            return value
        if value is None:
            if exif_focal_35mm:
                return camera_from_35mm(exif_focal_35mm, width, height)
            return default_camera(width, height)
        if not isinstance(value, dict) or "fx" not in value:
            raise InputError(f"camera must be an object with fx, fy (and optionally cx, cy), got {value!r}")
        try:
            fx = float(value["fx"])
            fy = float(value.get("fy", fx))
            cx = float(value.get("cx", width / 2.0))
            cy = float(value.get("cy", height / 2.0))
        except (TypeError, ValueError) as err:
            raise InputError(f"camera values must be numbers: {err}") from None
        if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
            raise InputError(f"camera focal lengths must be positive, got fx={fx}, fy={fy}")
        return Camera(fx, fy, cx, cy)


def default_camera(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> Camera:
    """Camera with `fov_deg` across the longer image side and the principal point at the centre."""
    focal = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)
    return Camera(focal, focal, width / 2.0, height / 2.0)


def camera_from_35mm(focal_35mm: float, width: int, height: int) -> Camera:
    """Camera from EXIF FocalLengthIn35mmFilm (36 mm film width maps to the longer side)."""
    focal = focal_35mm / 36.0 * max(width, height)
    return Camera(focal, focal, width / 2.0, height / 2.0)
