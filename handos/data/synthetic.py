"""Synthetic training hands generated on the fly from the hand model, seen through the foundation's errors.

One call = one batch, vectorised: pose prior (hand model sampler) + random global rotation, shape,
left/right (mirror), a random perspective camera and placement in the frame, projection, then the
measured error model turns ground truth into what the foundation would report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from handos.data.error_model import ErrorModel, _rand, _randn
from handos.geometry import axis_angle_to_matrix, project
from handos.model.decoder import DecoderInput


@dataclass
class SynthConfig:
    """Ranges of the generator."""

    fov_deg: tuple[float, float] = (18.0, 90.0)  # field of view across the longer image side
    image_long_side: tuple[float, float] = (256.0, 1920.0)
    hand_fraction: tuple[float, float] = (0.12, 0.9)  # wrist->middle-tip length / shorter image side
    shape_std: float = 1.0
    left_prob: float = 0.5
    palm_view_prob: float = 0.3  # extra mass on palm/back facing the camera (frequent in photos)
    pose_mix_flat: float = 0.1  # fraction of nearly flat (open) hands


@dataclass
class SynthTarget:
    """Ground truth for a synthetic batch."""

    vertices: torch.Tensor  # (B,V,3) m root-relative, camera axes
    joints_3d: torch.Tensor  # (B,21,3) m root-relative
    joints_2d: torch.Tensor  # (B,21,2) px
    cam_t: torch.Tensor  # (B,3) m wrist in camera frame
    is_left: torch.Tensor  # (B,) bool


def random_rotations(n: int, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform random rotations (n,3,3) from unit quaternions."""
    q = _randn((n, 4), gen, device)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(n, 3, 3)


class SyntheticHands:
    """Batch generator: `sample(n, gen)` -> (DecoderInput, SynthTarget)."""

    def __init__(self, hand_model: nn.Module, error_model: ErrorModel | None = None, config: SynthConfig | None = None,
                 joint_map: torch.Tensor | None = None):
        self.hand = hand_model
        self.joint_map = joint_map  # (21,21) hand-model joints -> output joints (the decoder's wrist convention)
        self.errors = error_model or ErrorModel.load()
        self.cfg = config or SynthConfig()
        with torch.no_grad():
            rest = hand_model(torch.zeros(1, 16, 3), None, None).joints[0]
        # canonical palm normal and finger direction of the right hand at rest
        fdir = rest[9] - rest[0]
        across = rest[5] - rest[17]
        self.rest_normal = torch.linalg.cross(fdir, across)
        self.rest_normal = self.rest_normal / self.rest_normal.norm()
        self.rest_length = float((rest[12] - rest[0]).norm())

    def _global_rotation(self, n: int, gen: torch.Generator | None, dev: torch.device) -> torch.Tensor:
        """Uniform rotations, with a share tilted so the palm or the back faces the camera."""
        rot = random_rotations(n, gen, dev)
        palm = _rand((n,), gen, dev) < self.cfg.palm_view_prob
        if palm.any():
            # rotate so the rest palm normal maps to +-z (camera axis), then a small tilt and any in-plane spin
            target = torch.tensor([0.0, 0.0, 1.0], device=dev)
            nrm = self.rest_normal.to(dev)
            axis = torch.linalg.cross(nrm, target)
            ang = torch.acos((nrm * target).sum().clamp(-1, 1))
            align = axis_angle_to_matrix((axis / axis.norm().clamp_min(1e-8) * ang)[None]).expand(n, 3, 3)
            flip = torch.where(_rand((n,), gen, dev) < 0.5, math.pi, 0.0)
            spin = _rand((n,), gen, dev) * 2 * math.pi
            tilt = _randn((n, 3), gen, dev) * 0.35
            zaxis = torch.stack([torch.zeros_like(spin), torch.zeros_like(spin), spin], -1)
            xaxis = torch.stack([flip, torch.zeros_like(flip), torch.zeros_like(flip)], -1)
            r2 = axis_angle_to_matrix(tilt) @ axis_angle_to_matrix(zaxis) @ axis_angle_to_matrix(xaxis) @ align
            rot = torch.where(palm[:, None, None], r2, rot)
        return rot

    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator | None = None, device: str | torch.device = "cpu"):
        """A batch of n hands: (DecoderInput, SynthTarget), on `device`."""
        cfg, dev = self.cfg, torch.device(device)
        fingers = self.hand.sample_poses(n, gen).to(dev)  # (n,15,3)
        flat = (_rand((n, 1, 1), gen, dev) < cfg.pose_mix_flat).float()
        fingers = fingers * (1 - flat * 0.8)
        rot = self._global_rotation(n, gen, dev)  # (n,3,3)
        num_shape = int(getattr(self.hand, "NUM_SHAPE", 10))
        shape = (_randn((n, num_shape), gen, dev) * cfg.shape_std).clamp(-2.5, 2.5)
        is_left = _rand((n,), gen, dev) < cfg.left_prob
        pose = torch.cat([torch.zeros(n, 1, 3, device=dev), fingers], 1)
        out = self.hand(pose, shape, is_left)
        joints = out.joints
        if self.joint_map is not None:
            joints = torch.einsum("jk,nkd->njd", self.joint_map.to(joints), joints)
        verts = out.vertices - joints[:, :1]
        joints = joints - joints[:, :1]
        verts = torch.einsum("bij,bvj->bvi", rot, verts)  # global rotation about the wrist
        joints = torch.einsum("bij,bvj->bvi", rot, joints)
        # camera
        lo, hi = cfg.image_long_side
        long_side = lo * torch.exp(_rand((n,), gen, dev) * math.log(hi / lo))
        aspect = torch.tensor([1.0, 4 / 3, 16 / 9], device=dev)[(_rand((n,), gen, dev) * 3).long().clamp(max=2)]
        short_side = long_side / aspect
        portrait = _rand((n,), gen, dev) < 0.3
        width = torch.where(portrait, short_side, long_side)
        height = torch.where(portrait, long_side, short_side)
        fov = math.radians(cfg.fov_deg[0]) + _rand((n,), gen, dev) * math.radians(cfg.fov_deg[1] - cfg.fov_deg[0])
        focal = 0.5 * long_side / torch.tan(fov / 2)
        cx = width / 2 * (1 + 0.05 * _randn((n,), gen, dev))
        cy = height / 2 * (1 + 0.05 * _randn((n,), gen, dev))
        camera = torch.stack([focal, focal, cx, cy], -1)
        # placement: apparent size -> depth; wrist pixel anywhere in the frame (hands may be cut off)
        frac = cfg.hand_fraction[0] * torch.exp(_rand((n,), gen, dev) * math.log(cfg.hand_fraction[1] / cfg.hand_fraction[0]))
        length = (joints[:, 12] - joints[:, 0]).norm(dim=-1).clamp_min(0.05)
        tz = focal * length / (frac * torch.minimum(width, height))
        tz = torch.maximum(tz, -joints[..., 2].amin(1) + 0.08)  # keep every joint well in front
        wu = width * (0.1 + 0.8 * _rand((n,), gen, dev))
        wv = height * (0.1 + 0.8 * _rand((n,), gen, dev))
        cam_t = torch.stack([(wu - cx) / focal * tz, (wv - cy) / focal * tz, tz], -1)
        j_cam = joints + cam_t[:, None]
        j2d = project(j_cam, camera[:, None], min_depth=1e-4)
        obs = self.errors.apply(j2d, j_cam, camera, gen)
        inp = DecoderInput(joints_2d=obs["joints_2d"], joints_z=obs["joints_z"], joint_conf=obs["joint_conf"],
                           camera=camera, world=obs["world"])
        return inp, SynthTarget(vertices=verts, joints_3d=joints, joints_2d=j2d, cam_t=cam_t, is_left=is_left)
