"""Training losses of the decoder (the HandOS paper's set): vertex, joint, normal, edge, 2D reprojection,
2D joint (+ OKS), camera, bone length. All are scale-normalised so each term is O(1) early in training."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from handos.geometry import project
from handos.hand.skeleton import PARENTS

CM = 100.0  # 3D terms in centimetres
OKS_SIGMA = 0.025  # in ROI units (the ROI is ~2x the hand)


@dataclass
class LossWeights:
    """Relative weights of the loss terms."""

    vertex: float = 1.0
    joint: float = 1.0
    joint_aux: float = 0.5
    normal: float = 0.2
    edge: float = 1.0
    reproj: float = 5.0
    joint_2d: float = 20.0
    oks: float = 1.0
    score: float = 0.1
    camera: float = 1.0
    bone: float = 0.0  # bone lengths of the direct (auxiliary) 3D joints; 0 = off


BONE_PARENTS = torch.tensor(PARENTS[1:])  # (20,) parent of joints 1..20


def bone_lengths(joints: torch.Tensor) -> torch.Tensor:
    """Lengths (B,20) of the 20 bones (child - parent) of joints (B,21,3)."""
    return (joints[:, 1:] - joints[:, BONE_PARENTS]).norm(dim=-1)


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """Unique undirected edges (E,2) of a triangle mesh (F,3)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0)


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit face normals (B,F,3)."""
    v0, v1, v2 = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
    return F.normalize(torch.linalg.cross(v1 - v0, v2 - v0), dim=-1, eps=1e-12)


def decoder_losses(out, target, inp, faces: torch.Tensor, edges: torch.Tensor,
                   w: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted total loss and a dict of the (unweighted) terms."""
    roi = out.aux["roi"]
    size = roi[:, 2:3]  # (B,1) px
    terms: dict[str, torch.Tensor] = {}
    terms["vertex"] = (out.vertices - target.vertices).abs().mean() * CM
    # the same terms whichever joints the decoder reports (config joints_3d): "joint"/"reproj" on the mesh joints
    mesh_joints, direct = out.aux.get("joints_3d_mesh", out.joints_3d), out.aux["joints_3d_aux"]  # (B,21,3) each
    terms["joint"] = (mesh_joints - target.joints_3d).abs().mean() * CM
    terms["joint_aux"] = (direct - target.joints_3d).abs().mean() * CM
    terms["bone"] = (bone_lengths(direct) - bone_lengths(target.joints_3d)).abs().mean() * CM
    # normals: same faces for pred and GT, so winding (left/right) cancels out
    terms["normal"] = (1 - (face_normals(out.vertices, faces) * face_normals(target.vertices, faces)).sum(-1)).mean()
    le = lambda v: (v[:, edges[:, 0]] - v[:, edges[:, 1]]).norm(dim=-1)  # noqa: E731
    terms["edge"] = (le(out.vertices) - le(target.vertices)).abs().mean() * CM
    # 2D: refined joints and the reprojection of the placed 3D joints, in ROI units
    d2 = (out.joints_2d - target.joints_2d).norm(dim=-1) / size  # (B,21)
    terms["joint_2d"] = ((out.joints_2d - target.joints_2d).abs() / size[..., None]).mean()
    oks = torch.exp(-(d2 ** 2) / (2 * OKS_SIGMA ** 2))
    terms["oks"] = (1 - oks).mean()
    proj = project(mesh_joints + out.cam_t[:, None], inp.camera[:, None], min_depth=1e-4)
    terms["reproj"] = ((proj - target.joints_2d).abs() / size[..., None]).clamp(max=1.0).mean()
    terms["score"] = F.binary_cross_entropy(out.joints_2d_score.clamp(1e-4, 1 - 1e-4), oks.detach())
    tz, tz_gt = out.cam_t[:, 2], target.cam_t[:, 2]
    terms["camera"] = ((torch.log(tz) - torch.log(tz_gt)).abs()
                       + ((out.cam_t[:, :2] - target.cam_t[:, :2]).abs() / tz_gt[:, None]).sum(-1)).mean() * 10
    total = sum(getattr(w, k) * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
