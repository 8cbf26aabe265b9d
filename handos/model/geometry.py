"""Pure geometry for the decoder: MediaPipe-style ROIs from landmarks and ROI frames (generic pieces: handos.geometry)."""
from __future__ import annotations

import torch

from handos.foundation.roi import roi_from_landmarks
from handos.geometry import rot2d

MIN_ROI_SIZE = 2e-3  # px: an ROI of coincident landmarks still has a frame to divide by


def landmark_roi(joints_2d: torch.Tensor) -> torch.Tensor:
    """The decoder's square ROIs (N,5) [cx, cy, size, size, rotation] px of landmarks (N,21,2) px, never of size 0.

    MediaPipe's landmarks->ROI rule, the foundation's own (`foundation.roi.roi_from_landmarks`: its next-frame ROI),
    so the decoder's ROI of the foundation's landmarks is the foundation's `next_roi`.
    """
    roi = roi_from_landmarks(joints_2d)  # (N,5)
    return torch.cat([roi[:, :2], roi[:, 2:4].clamp_min(MIN_ROI_SIZE), roi[:, 4:]], -1)


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
