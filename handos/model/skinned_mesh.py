"""A clean hand mesh for predicted 3D joints: our hand model's template skinned so its bones follow the joints.

The shipped decoder predicts 64 coarse vertices upsampled to the full mesh, which keeps the hand's pose but
flattens finger tubes. Skinning the template to the decoder's own 3D joints gives a mesh that agrees with
those joints and looks like a hand. Pure geometry, vectorised over hands and bones.
"""
from __future__ import annotations

import torch

PALM = (0, 5, 9, 13, 17)  # wrist and the four finger bases: the rigid palm
SEGMENTS = tuple(j for j in range(1, 21) if j % 4 != 0)  # joints whose bone goes to child j+1
TIPS = (4, 8, 12, 16, 20)


def kabsch(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation R (N,3,3) and translation t (N,3) with dst ~ R src + t; src (K,3), dst (N,K,3)."""
    mu_s, mu_d = src.mean(0), dst.mean(1)  # (3,), (N,3)
    h = torch.einsum("ki,nkj->nij", src - mu_s, dst - mu_d[:, None])  # (N,3,3)
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = vt.transpose(1, 2) @ fix @ u.transpose(1, 2)
    return rot, mu_d - torch.einsum("nij,j->ni", rot, mu_s)


def align_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotation (…,3,3) turning unit vectors a (…,3) onto unit vectors b (…,3)."""
    v = torch.cross(a, b, dim=-1)
    c = (a * b).sum(-1).clamp(min=-1 + 1e-6)
    zero = torch.zeros_like(c)
    vx = torch.stack([torch.stack([zero, -v[..., 2], v[..., 1]], -1),
                      torch.stack([v[..., 2], zero, -v[..., 0]], -1),
                      torch.stack([-v[..., 1], v[..., 0], zero], -1)], -2)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand(vx.shape)
    return eye + vx + vx @ vx / (1 + c)[..., None, None]


def skin_to_joints(joints: torch.Tensor, rest_vertices: torch.Tensor, rest_joints: torch.Tensor,
                   skin_weights: torch.Tensor, is_left: torch.Tensor) -> torch.Tensor:
    """Template vertices (N,V,3) posed so each bone follows joints (N,21,3); left hands come out mirrored.

    rest_* are the right hand's template (V,3)/(21,3) and skin_weights (V,21) (column j moves with the bone
    leaving joint j; tips share their parent's rotation). Palm: rigid fit to the wrist and finger bases.
    """
    dtype = rest_vertices.dtype
    flip = torch.where(is_left, -1.0, 1.0).to(dtype)[:, None, None]  # mirror left hands into right-hand space
    target = joints.to(dtype) * torch.cat([flip, torch.ones_like(flip), torch.ones_like(flip)], -1)
    n = target.shape[0]
    palm = list(PALM)
    r0, t0 = kabsch(rest_joints[palm], target[:, palm])  # (N,3,3), (N,3)
    rot = r0[:, None].repeat(1, 21, 1, 1)  # (N,21,3,3)
    anchor = torch.einsum("nij,kj->nki", r0, rest_joints) + t0[:, None]  # (N,21,3) rigid palm placement
    seg = torch.tensor(SEGMENTS, device=joints.device)
    rest_dir = torch.nn.functional.normalize(rest_joints[seg + 1] - rest_joints[seg], dim=-1)  # (S,3)
    rest_dir = torch.einsum("nij,sj->nsi", r0, rest_dir)  # after the palm rotation
    pred_dir = torch.nn.functional.normalize(target[:, seg + 1] - target[:, seg], dim=-1)  # (N,S,3)
    rot[:, seg] = align_rotation(rest_dir, pred_dir) @ r0[:, None]
    anchor[:, seg] = target[:, seg]
    tips = torch.tensor(TIPS, device=joints.device)
    rot[:, tips] = rot[:, tips - 1]
    anchor[:, tips] = target[:, tips]
    # linear blend skinning: bone j moves a vertex v to rot_j (v - rest_j) + anchor_j; blending the (3x4)
    # transforms by the weights first (N,V,12) costs V x 21 x 12 instead of posing every vertex by every bone
    offset = anchor - torch.einsum("njab,jb->nja", rot, rest_joints)  # (N,21,3)
    bones = torch.cat([rot.reshape(n, 21, 9), offset], -1)  # (N,21,12)
    blended = torch.einsum("vj,njk->nvk", skin_weights, bones)  # (N,V,12)
    verts = torch.einsum("nvab,vb->nva", blended[..., :9].reshape(n, -1, 3, 3), rest_vertices) + blended[..., 9:]
    return verts * torch.cat([flip, torch.ones_like(flip), torch.ones_like(flip)], -1)
