"""Fixed viewpoints for looking at a root-relative hand, and a camera that frames it."""
from __future__ import annotations

import math

import numpy as np
import torch

from handos.geometry import axis_angle_to_matrix
from handos.render.shading import render_mesh

# view name -> axis-angle applied to the canonical hand (palm faces -z, i.e. the camera, at rest)
VIEWS: dict[str, tuple[float, float, float]] = {
    "front": (0.0, 0.0, 0.0),  # palm toward the camera, fingers up
    "top": (0.0, math.pi, 0.0),  # back of the hand toward the camera
    "side": (0.0, math.pi / 2, 0.0),  # thumb side toward the camera
}


def view_rotation(name: str) -> torch.Tensor:
    """(3, 3) rotation for a named view."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; one of {list(VIEWS)}")
    return axis_angle_to_matrix(torch.tensor(VIEWS[name], dtype=torch.float64)).float()


def frame_camera(points: torch.Tensor, height: int, width: int, fov_deg: float = 30.0,
                 margin: float = 1.15) -> tuple[torch.Tensor, np.ndarray]:
    """Translate points (N, 3) in front of a camera so they fill an H x W image: (points_cam, K (3, 3))."""
    f = 0.5 * max(height, width) / math.tan(math.radians(fov_deg) / 2)
    K = np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float32)
    lo, hi = points.amin(0), points.amax(0)
    centre = (lo + hi) / 2
    half = (hi - lo) / 2
    dist_x = float(half[0]) * margin * f / (width / 2.0)
    dist_y = float(half[1]) * margin * f / (height / 2.0)
    dist = max(dist_x, dist_y) + float(half[2])
    shift = torch.tensor([0.0, 0.0, dist], dtype=points.dtype) - centre
    return points + shift, K


def render_view(vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor, view: str = "front", size: int = 512,
                color: tuple[int, int, int] = (222, 178, 150), background: tuple[int, int, int] = (40, 44, 52)) -> np.ndarray:
    """Render a root-relative hand mesh from a named view into a size x size RGB uint8 image."""
    pts = torch.as_tensor(np.asarray(vertices), dtype=torch.float32) @ view_rotation(view).T
    pts, K = frame_camera(pts, size, size)
    return render_mesh(None, [(pts, torch.as_tensor(np.asarray(faces)), color)], K, alpha=1.0,
                       height=size, width=size, background=background, cull_backfaces=True)
