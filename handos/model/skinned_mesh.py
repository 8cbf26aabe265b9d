"""A clean hand mesh for predicted 3D joints: our hand model's template skinned so its bones follow the joints.

The shipped decoder predicts 64 coarse vertices upsampled to the full mesh, which keeps the hand's pose but
flattens finger tubes. Skinning the template to the decoder's own 3D joints gives a mesh that agrees with
those joints and looks like a hand. Pure geometry, vectorised over hands and bones.

Bones: the palm (a rigid fit to the wrist and finger bases) and the 15 finger segments (joint j -> j+1,
j % 4 != 0). Each joint's skinning weight column moves with the bone leaving it, a tip's with its parent's
segment. Everything that depends only on the template is folded into one basis (`skinning_basis`), so posing
is a handful of small ops per hand and one (3, K) @ (K, V) product.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from handos.geometry import det3, skew

PALM = (0, 5, 9, 13, 17)  # wrist and the four finger bases: the rigid palm
SEGMENTS = tuple(j for j in range(1, 21) if j % 4 != 0)  # joints whose bone goes to child j+1
TIPS = (4, 8, 12, 16, 20)
NUM_BONES = 1 + len(SEGMENTS)  # bone 0 = palm, bone 1 + s = segment s
# the bone that moves each joint's skinning weight column: the wrist the palm, a tip its parent's segment
BONE_OF_JOINT = tuple(0 if j == 0 else 1 + SEGMENTS.index(j - 1 if j in TIPS else j) for j in range(21))
# (15, 21) rows joint j+1 - joint j for j in SEGMENTS: bone vectors as one product (exact: one +1 and one -1 a row)
BONE_VECTORS = tuple(tuple(float(k == j + 1) - float(k == j) for k in range(21)) for j in SEGMENTS)
MIRROR_X = (-1.0, 1.0, 1.0)  # left hands <-> right-hand space


def kabsch(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation R (N,3,3) and translation t (N,1,3) with dst ~ src @ R^T + t (row vectors); src (K,3), dst (N,K,3)."""
    mu_s, mu_d = src.mean(0, keepdim=True), dst.mean(1, keepdim=True)  # (1,3), (N,1,3)
    u, _, vt = torch.linalg.svd((src - mu_s).T @ (dst - mu_d))  # of the (N,3,3) cross-covariance
    v, ut = vt.mT, u.mT
    flip = F.pad(torch.sign(det3(v @ ut)).unsqueeze(-1), (2, 0), value=1.0)  # (N,3) [1, 1, ±1]: no reflection
    rot = (v * flip.unsqueeze(1)) @ ut
    return rot, mu_d - mu_s @ rot.mT


def align_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotation (…,3,3) turning unit vectors a (…,3) onto unit vectors b (…,3): I + [v]x + [v]x^2 / (1 + c)."""
    vx = skew(torch.linalg.cross(a, b))  # v = a x b, |v| = sin
    c = (a * b).sum(-1, keepdim=True).clamp(min=-1 + 1e-6)  # (…,1) cos
    return torch.eye(3, dtype=a.dtype, device=a.device) + vx + vx @ vx / (1 + c).unsqueeze(-1)


def bone_directions(joints: torch.Tensor) -> torch.Tensor:
    """Unit vectors (…,15,3) along the finger segments (in SEGMENTS order) of joints (…,21,3)."""
    bones = joints.new_tensor(BONE_VECTORS) @ joints  # (…,15,3)
    return bones / bones.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # as F.normalize


def skinning_basis(rest_vertices: torch.Tensor, rest_joints: torch.Tensor, skin_weights: torch.Tensor) -> torch.Tensor:
    """(K, V) basis, K = 3*NUM_BONES + 21: posed vertices (V,3) = (P^T @ basis)^T for the pose parameters P (K,3).

    P stacks each bone's rotation R_b transposed (3 rows a bone) and each joint's anchor (21 rows). Linear blend
    skinning moves a vertex v by joint j's weight column to R_bone(j) (v - rest_j) + anchor_j; the rest-pose
    offsets are summed per bone here, once per template (rest_vertices (V,3), rest_joints (21,3), weights (V,21)).
    Vertices come last: (3, K) @ (K, V) runs several times faster than (V, K) @ (K, 3) on the CPU (BLAS, small N).
    """
    bone = F.one_hot(torch.tensor(BONE_OF_JOINT, device=skin_weights.device), NUM_BONES).to(skin_weights.dtype)  # (21,B)
    offsets = skin_weights[..., None] * (rest_vertices[:, None] - rest_joints)  # (V,21,3)
    per_bone = torch.einsum("vjc,jb->bcv", offsets, bone)  # (B,3,V)
    return torch.cat([per_bone.flatten(0, 1), skin_weights.T], 0).contiguous()


def skin_to_joints(joints: torch.Tensor, rest_joints: torch.Tensor, basis: torch.Tensor,
                   is_left: torch.Tensor) -> torch.Tensor:
    """Template vertices (N,V,3) posed so each bone follows joints (N,21,3); left hands come out mirrored.

    rest_joints (21,3) are the right hand's template joints, basis = skinning_basis(template) (K, V).
    Palm: rigid fit to the wrist and finger bases; each finger segment: the palm's rotation, then the smallest
    rotation turning its rest direction onto the predicted one; anchors: the joints themselves (wrist: the fit).
    """
    mirror = torch.where(is_left.view(-1, 1, 1), joints.new_tensor(MIRROR_X), 1.0)  # (N,1,3)
    target = joints * mirror  # left hands into right-hand space
    r0, t0 = kabsch(rest_joints[list(PALM)], target[:, list(PALM)])  # (N,3,3), (N,1,3)
    r0t = r0.mT
    rest_dir = bone_directions(rest_joints) @ r0t  # (N,15,3) after the palm rotation
    rot = align_rotation(rest_dir, bone_directions(target)) @ r0.unsqueeze(1)  # (N,15,3,3)
    # pose parameters P (N,K,3): rotations transposed (palm, segments), anchors (wrist: the rigid palm's), mirrored back
    params = torch.cat([r0t, rot.mT.flatten(1, 2), rest_joints[:1] @ r0t + t0, target.narrow(1, 1, 20)], 1) * mirror
    return (params.mT.flatten(0, 1) @ basis).unflatten(0, (-1, 3)).mT.contiguous()  # (N*3,K) @ (K,V) -> (N,V,3)
