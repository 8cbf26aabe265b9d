"""`HandModel`: our articulated hand (or a user's MANO via smplx), posed by forward kinematics + LBS.

Frame (see `handos.hand.template`): metres, root-relative (the wrist joint at the origin); the rest
right hand lies flat with the fingers along -y, the palm facing -z and the thumb on +x. A left
hand is the exact mirror image (x -> -x) of the right hand with the same pose and shape, so one pose
vocabulary serves both; its faces are re-wound (`faces_for(True)`) so normals stay outward.

Pose (B, 16, 3) axis-angle in rest-pose axes (MANO convention): row 0 = global/wrist rotation about
the wrist, rows 1..15 = thumb1-3, index1-3, middle1-3, ring1-3, pinky1-3 (FreiHAND finger order,
joints 1..3 of each finger, base -> tip; thumb1 is the CMC joint). (B, 15, 3) means no global
rotation. For a left hand the rows are those of the right hand it mirrors (a global rotation R of a
right hand becomes M R M on the left, M = diag(-1, 1, 1); see `mirror_pose`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from handos.errors import ConfigError, InputError
from handos.geometry import axis_angle_to_matrix, matrix_to_axis_angle
from handos.hand import poses as _poses
from handos.hand.geometry import forward_kinematics, skin
from handos.hand.skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS, POSE_JOINTS, chirality
from handos.hand.template import NUM_SHAPE, SHAPE_NAMES, build_template

MIRROR = torch.tensor([-1.0, 1.0, 1.0])


@dataclass
class HandOutput:
    """Posed hands, metres, root-relative."""

    vertices: torch.Tensor  # (B, V, 3)
    joints: torch.Tensor  # (B, 21, 3)


def mirror_vertices(points: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Mirror points (..., 3) through the x = 0 plane (right <-> left)."""
    if isinstance(points, np.ndarray):
        return points * np.array([-1.0, 1.0, 1.0], dtype=points.dtype)
    return points * MIRROR.to(points)


def mirror_pose(pose: torch.Tensor) -> torch.Tensor:
    """Axis-angle rows (..., 3) of a rotation R -> those of M R M (M = mirror x): (a, b, c) -> (a, -b, -c)."""
    return pose * torch.tensor([1.0, -1.0, -1.0]).to(pose)


def _full_pose(pose: torch.Tensor) -> torch.Tensor:
    """(B, 16, 3) / (B, 15, 3) / (B, 48) / (B, 45) -> (B, 16, 3)."""
    if pose.dim() == 2 and pose.shape[-1] in (45, 48):
        pose = pose.reshape(pose.shape[0], -1, 3)
    if pose.dim() != 3 or pose.shape[-1] != 3 or pose.shape[1] not in (15, 16):
        raise InputError(f"pose must be (B, 16, 3) axis-angle (or (B, 15, 3) without the global rotation), got {tuple(pose.shape)}")
    if pose.shape[1] == 15:
        pose = torch.cat([torch.zeros_like(pose[:, :1]), pose], dim=1)
    return pose


class HandModel(nn.Module):
    """Articulated hand: `forward(pose (B,16,3), shape (B,NUM_SHAPE)|None, is_left (B,)|None) -> HandOutput`.

    backend "handos" (default): our generated hand. backend "mano": `smplx.MANO` from the user's
    `MANO_RIGHT.pkl` / `MANO_LEFT.pkl` in `mano_dir` or $HANDOS_MANO_DIR (never shipped).
    """

    def __init__(self, backend: str = "handos", mano_dir: str | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if backend not in ("handos", "mano"):
            raise ConfigError(f"unknown hand model backend {backend!r}; use 'handos' or 'mano'")
        self.backend = backend
        t = build_template()
        self.NUM_SHAPE = NUM_SHAPE
        self.shape_names = SHAPE_NAMES
        self.register_buffer("frames", torch.tensor(t.frames, dtype=dtype), persistent=False)  # (21, 3, 3)
        if backend == "mano":
            from handos.hand.mano import ManoBackend

            self.mano = ManoBackend(mano_dir or os.environ.get("HANDOS_MANO_DIR"), dtype=dtype)
            self.NUM_SHAPE = self.mano.num_betas
            self.shape_names = tuple(f"beta{i}" for i in range(self.NUM_SHAPE))
            vt, faces, weights, reg = self.mano.arrays()
            if True in self.mano.models:
                left_faces = np.asarray(self.mano.models[True].faces, dtype=np.int64)
                self.register_buffer("_faces_left", torch.as_tensor(left_faces), persistent=False)
        else:
            vt, faces, weights, reg = t.vertices, t.faces, t.skin_weights, t.joint_regressor
            self.register_buffer("shapedirs", torch.tensor(t.shapedirs, dtype=dtype), persistent=False)  # (V, 3, S)
        self.register_buffer("v_template", torch.as_tensor(vt, dtype=dtype), persistent=False)  # (V, 3)
        self.register_buffer("faces", torch.as_tensor(np.asarray(faces), dtype=torch.long), persistent=False)  # (F, 3)
        self.register_buffer("skin_weights", torch.as_tensor(weights, dtype=dtype), persistent=False)  # (V, 21)
        self.register_buffer("joint_regressor", torch.as_tensor(reg, dtype=dtype), persistent=False)  # (21, V)

    # ------------------------------------------------------------------ attributes
    @property
    def faces_left(self) -> torch.Tensor:
        """(F, 3) faces of the mirrored (left) hand, re-wound so normals point outward."""
        if hasattr(self, "_faces_left"):
            return self._faces_left
        return self.faces[:, [0, 2, 1]]

    def faces_for(self, is_left: bool | str) -> torch.Tensor:
        """(F, 3) faces for a left (True or "left") or right (False or "right") hand."""
        if isinstance(is_left, str):
            if is_left not in ("left", "right"):
                raise InputError(f"handedness must be 'left' or 'right', got {is_left!r}")
            is_left = is_left == "left"
        return self.faces_left if bool(is_left) else self.faces

    @property
    def num_vertices(self) -> int:
        """Number of mesh vertices V."""
        return int(self.v_template.shape[0])

    @property
    def rest_vertices(self) -> torch.Tensor:
        """(V, 3) right hand, rest pose, mean shape."""
        return self.v_template

    @property
    def rest_joints(self) -> torch.Tensor:
        """(21, 3) joints of the rest hand (= joint_regressor @ rest_vertices)."""
        return self.joint_regressor @ self.v_template

    @staticmethod
    def mirror_vertices(points: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Mirror points (..., 3) through x = 0 (right <-> left)."""
        return mirror_vertices(points)

    mirror = mirror_vertices

    # ------------------------------------------------------------------ poses
    def local_to_pose(self, local: torch.Tensor) -> torch.Tensor:
        """Local anatomical angles (..., 15, 3) (flexion, abduction, twist) -> pose rows (..., 15, 3)."""
        fr = self.frames[list(POSE_JOINTS[1:])].to(local)  # (15, 3, 3)
        return torch.einsum("jab,...jb->...ja", fr, local)

    def pose_to_local(self, pose: torch.Tensor) -> torch.Tensor:
        """Pose rows (..., 15, 3) -> local anatomical angles (..., 15, 3)."""
        fr = self.frames[list(POSE_JOINTS[1:])].to(pose)
        return torch.einsum("jba,...jb->...ja", fr, pose)

    def pose_preset(self, name: str) -> torch.Tensor:
        """A named finger pose (15, 3): one of `pose_presets()`."""
        if name not in _poses.PRESETS:
            raise InputError(f"unknown hand pose {name!r}; one of: {', '.join(_poses.PRESETS)}")
        return self.local_to_pose(_poses.PRESETS[name].to(self.frames))

    @staticmethod
    def pose_presets() -> tuple[str, ...]:
        """Names of the pose presets."""
        return tuple(_poses.PRESETS)

    def sample_poses(self, n: int, generator: torch.Generator | None = None, kind: str | None = None) -> torch.Tensor:
        """(n, 15, 3) plausible finger poses within the joint limits (see `handos.hand.poses.sample_local`)."""
        return self.local_to_pose(_poses.sample_local(n, generator, kind).to(self.frames))

    def clamp_to_limits(self, pose: torch.Tensor) -> torch.Tensor:
        """Clamp finger poses (..., 15, 3) (or (..., 16, 3), row 0 kept) to the joint limits."""
        if pose.shape[-2] == 16:
            return torch.cat([pose[..., :1, :], self.clamp_to_limits(pose[..., 1:, :])], dim=-2)
        return self.local_to_pose(_poses.clamp_local(self.pose_to_local(pose)))

    def within_limits(self, pose: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
        """(...) bool: finger poses (..., 15, 3) respect the joint limits."""
        return _poses.within_limits(self.pose_to_local(pose), tol)

    # ------------------------------------------------------------------ forward
    def shaped(self, shape: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, V, 3) rest vertices for shape parameters (B, NUM_SHAPE) (None = mean shape)."""
        v = self.v_template.expand(batch, -1, -1)
        if shape is None or self.backend == "mano":
            return v
        if shape.shape != (batch, self.NUM_SHAPE):
            raise InputError(f"shape must be (B, {self.NUM_SHAPE}), got {tuple(shape.shape)}")
        return v + torch.einsum("vcs,bs->bvc", self.shapedirs, shape.to(v))

    def forward(self, pose: torch.Tensor, shape: torch.Tensor | None = None,
                is_left: torch.Tensor | None = None) -> HandOutput:
        """Posed vertices (B, V, 3) and joints (B, 21, 3), metres, wrist at the origin."""
        pose = _full_pose(torch.as_tensor(pose)).to(self.v_template)
        b = pose.shape[0]
        if self.backend == "mano":
            verts, joints = self.mano.forward(pose, shape, is_left)  # handedness applied there
            return HandOutput(vertices=verts, joints=joints)
        else:
            rest = self.shaped(shape, b)  # (B, V, 3)
            rest_j = torch.einsum("jv,bvc->bjc", self.joint_regressor, rest)  # (B, 21, 3)
            rot = torch.eye(3, dtype=pose.dtype, device=pose.device).repeat(b, NUM_JOINTS, 1, 1)
            rot[:, list(POSE_JOINTS)] = axis_angle_to_matrix(pose)
            r_glob, joints = forward_kinematics(rot, rest_j)
            verts = skin(rest, self.skin_weights, r_glob, joints, rest_j)
        root = joints[:, :1]
        verts, joints = verts - root, joints - root
        if is_left is not None:
            flip = torch.as_tensor(is_left, device=verts.device).reshape(b, 1, 1).bool()
            m = MIRROR.to(verts)
            verts = torch.where(flip, verts * m, verts)
            joints = torch.where(flip, joints * m, joints)
        return HandOutput(vertices=verts, joints=joints)


__all__ = ["HandModel", "HandOutput", "JOINT_NAMES", "PARENTS", "NUM_SHAPE", "chirality", "mirror_pose",
           "mirror_vertices", "axis_angle_to_matrix", "matrix_to_axis_angle"]
