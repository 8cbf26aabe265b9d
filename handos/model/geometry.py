"""Pure geometry for the decoder: MediaPipe-style ROIs from landmarks and ROI frames (generic pieces: handos.geometry)."""
from __future__ import annotations

import math

import torch

from handos.geometry import rot2d

# Landmarks MediaPipe uses to place the next ROI (hand_landmark_landmarks_to_roi.pbtxt):
# wrist, thumb1-3, index1-2, middle1-2, ring1-2, pinky1-2.
ROI_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
ROI_SCALE = 2.0  # RectTransformationCalculator scale_x/scale_y
ROI_SHIFT_Y = -0.1  # shift_y (towards the fingers)


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Angles wrapped to [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def landmark_roi(joints_2d: torch.Tensor) -> torch.Tensor:
    """MediaPipe's landmarks->ROI rule: (N,21,2) px -> (N,5) [cx, cy, size, size, rotation] px, square."""
    wrist = joints_2d[:, 0]  # (N,2)
    mid = ((joints_2d[:, 5] + joints_2d[:, 13]) / 2 + joints_2d[:, 9]) / 2
    d = mid - wrist
    rot = wrap_angle(math.pi / 2 - torch.atan2(-d[:, 1], d[:, 0]))  # (N,) 0 = fingers up
    pts = joints_2d[:, list(ROI_LANDMARKS)]  # (N,12,2)
    centre_aa = (pts.amax(1) + pts.amin(1)) / 2  # (N,2)
    r_inv = rot2d(-rot)  # (N,2,2)
    proj = torch.einsum("nij,nkj->nki", r_inv, pts - centre_aa[:, None])  # (N,12,2)
    lo, hi = proj.amin(1), proj.amax(1)
    wh = hi - lo  # (N,2)
    c_loc = (hi + lo) / 2
    c_loc = c_loc + torch.stack([torch.zeros_like(wh[:, 1]), wh[:, 1] * ROI_SHIFT_Y], -1)
    centre = torch.einsum("nij,nj->ni", rot2d(rot), c_loc) + centre_aa
    size = wh.amax(-1).clamp_min(1e-3) * ROI_SCALE  # (N,) square_long
    return torch.cat([centre, size[:, None], size[:, None], rot[:, None]], -1)


def to_roi_frame(points: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """Pixels (N,K,2) -> ROI frame (N,K,2): centred, un-rotated, divided by the ROI width."""
    r_inv = rot2d(-roi[:, 4])
    return torch.einsum("nij,nkj->nki", r_inv, points - roi[:, None, :2]) / roi[:, None, 2:3]


def from_roi_frame(points: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """ROI frame (N,K,2) -> pixels (N,K,2); inverse of to_roi_frame."""
    return torch.einsum("nij,nkj->nki", rot2d(roi[:, 4]), points * roi[:, None, 2:3]) + roi[:, None, :2]


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """(…,3,3) rotations by angle (…,) about the camera's z axis: handos.geometry.rot2d in the image plane."""
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).unflatten(-1, (3, 3))
