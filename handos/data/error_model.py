"""The foundation's (MediaPipe's) errors, measured on the real sets, applied to synthetic ground truth.

Numbers come from `error_stats.json` (written by `measure_errors.py`); see that file for what was
measured and how. All noise is drawn from a torch.Generator so a batch is reproducible.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from handos.geometry import axis_angle_to_matrix
from handos.hand.skeleton import NUM_JOINTS
from handos.model.geometry import from_roi_frame, landmark_roi, to_roi_frame

STATS_PATH = Path(__file__).with_name("error_stats.json")


def _randn(shape: tuple, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise on the generator's device, moved to `device`."""
    return torch.randn(shape, generator=gen, device=gen.device if gen is not None else device).to(device)


def _rand(shape: tuple, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0,1) noise on the generator's device, moved to `device`."""
    return torch.rand(shape, generator=gen, device=gen.device if gen is not None else device).to(device)


def random_rotation(axis_angle_std: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Small random rotations (B,3,3): axis uniform, angle ~ N(0, std) per row of std (B,)."""
    b, dev = axis_angle_std.shape[0], axis_angle_std.device
    aa = _randn((b, 3), gen, dev)
    aa = aa / aa.norm(dim=-1, keepdim=True).clamp_min(1e-8) * (_randn((b, 1), gen, dev) * axis_angle_std[:, None])
    return axis_angle_to_matrix(aa)


def hand_frame(joints: torch.Tensor) -> torch.Tensor:
    """Hand-local axes (B,3,3) as rows: x ~ index1->pinky1, y ~ wrist->middle1, z = x cross y."""
    y = joints[:, 9] - joints[:, 0]
    y = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    x = joints[:, 17] - joints[:, 5]
    x = x - (x * y).sum(-1, keepdim=True) * y
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.stack([x, y, torch.cross(x, y, dim=-1)], 1)


@dataclass
class ErrorModel:
    """Measured MediaPipe error statistics (see error_stats.json) and how to apply them."""

    offset_2d_mean: torch.Tensor  # (21,2) ROI units
    offset_2d_std: torch.Tensor  # (21,2)
    hand_shift_std: torch.Tensor  # (2,)
    depth_scale: float
    depth_res_mean: torch.Tensor  # (21,)
    depth_res_std: torch.Tensor  # (21,)
    world_scale_mean: float
    world_scale_std: float
    world_rot_rms: float
    world_res_mean: torch.Tensor  # (21,3) m, hand frame
    world_res_std: torch.Tensor  # (21,3)
    difficulty_sigma: float = 0.35  # log-normal per-hand noise multiplier (hard hands are noisier)
    outlier_rate: float = 0.04  # joints with 3x noise (occlusion, confusions)
    noise_scale: float = 1.0  # global multiplier (1 = as measured)

    @staticmethod
    def load(path: str | Path = STATS_PATH, **overrides) -> ErrorModel:
        """The model from a stats JSON written by measure_errors.py."""
        s = json.loads(Path(path).read_text())
        t = lambda k: torch.tensor(s[k], dtype=torch.float32)  # noqa: E731
        return ErrorModel(
            offset_2d_mean=t("offset_2d_mean"), offset_2d_std=t("offset_2d_std"), hand_shift_std=t("hand_shift_std"),
            depth_scale=float(s["depth_scale"]), depth_res_mean=t("depth_res_mean"), depth_res_std=t("depth_res_std"),
            world_scale_mean=float(s["world_scale_mean"]), world_scale_std=float(s["world_scale_std"]),
            world_rot_rms=float(s["world_rot_err_rad_rms"]), world_res_mean=t("world_res_mean"),
            world_res_std=t("world_res_std"), **overrides)

    def apply(self, joints_2d: torch.Tensor, joints_cam: torch.Tensor, camera: torch.Tensor,
              gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Foundation-like observations from ground truth.

        joints_2d (B,21,2) px, joints_cam (B,21,3) m camera frame, camera (B,4) ->
        dict(joints_2d (B,21,2) px, joints_z (B,21) px units, joint_conf (B,21), world (B,21,3) m).
        """
        b, dev = joints_2d.shape[0], joints_2d.device
        k = self.noise_scale * torch.exp(self.difficulty_sigma * _randn((b, 1), gen, dev))  # (B,1)
        outlier = 1.0 + 2.0 * (_rand((b, 21), gen, dev) < self.outlier_rate).float()  # (B,21)
        roi = landmark_roi(joints_2d)
        u = to_roi_frame(joints_2d, roi)
        std = self.offset_2d_std.to(dev)
        shift = self.hand_shift_std.to(dev)
        jit = (std ** 2 - shift ** 2).clamp_min(1e-6).sqrt()
        u = (u + self.offset_2d_mean.to(dev) + (k * outlier)[..., None] * jit * _randn((b, NUM_JOINTS, 2), gen, dev)
             + k[..., None] * shift * _randn((b, 1, 2), gen, dev))
        j2d = from_roi_frame(u, roi)
        # relative depth: MediaPipe z ~= depth_scale * GT relative depth (both in ROI units) + noise
        size = roi[:, 2:3]
        focal = camera[:, :2].mean(-1, keepdim=True)
        rel = (joints_cam[..., 2] - joints_cam[:, :1, 2]) * focal / joints_cam[:, :1, 2] / size  # (B,21)
        scale = self.depth_scale * (1 + 0.1 * _randn((b, 1), gen, dev))
        z = scale * rel + self.depth_res_mean.to(dev) + k * outlier * self.depth_res_std.to(dev) * _randn((b, NUM_JOINTS), gen, dev)
        z = (z - z[:, :1]) * size  # px units, wrist at 0
        # world landmarks: scaled, rotated, per-joint residual in the hand's frame
        rel3 = joints_cam - joints_cam[:, :1]
        frame = hand_frame(rel3)  # (B,3,3) rows
        res_local = self.world_res_mean.to(dev) + (k * outlier)[..., None] * self.world_res_std.to(dev) * _randn((b, NUM_JOINTS, 3), gen, dev)
        res = torch.einsum("bkj,bji->bki", res_local, frame)  # local -> camera axes
        s = self.world_scale_mean + self.world_scale_std * _randn((b, 1, 1), gen, dev)
        rot = random_rotation(torch.full((b,), self.world_rot_rms / math.sqrt(1.0), device=dev), gen)
        world = s * torch.einsum("bij,bkj->bki", rot, rel3 + res)
        world = world - world.mean(1, keepdim=True)  # MediaPipe's world origin is the hand's centre
        conf = (0.7 + 0.3 * _rand((b, 1), gen, dev)).expand(b, NUM_JOINTS)
        return {"joints_2d": j2d, "joints_z": z, "joint_conf": conf.contiguous(), "world": world}
