"""Pure torch geometry for the hand model: axis-angle, forward kinematics, linear-blend skinning."""
from __future__ import annotations

import torch

from handos.hand.skeleton import DEPTH, PARENTS


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (..., 3) axis-angle -> (..., 3, 3) rotation matrices (smooth at zero)."""
    angle2 = (rotvec * rotvec).sum(-1, keepdim=True)  # (..., 1)
    small = angle2 < 1e-8
    angle = torch.sqrt(torch.where(small, torch.ones_like(angle2), angle2))
    # sin(t)/t and (1-cos t)/t^2 with Taylor fallbacks near zero
    a = torch.where(small, 1.0 - angle2 / 6.0, torch.sin(angle) / angle)
    b = torch.where(small, 0.5 - angle2 / 24.0, (1.0 - torch.cos(angle)) / torch.where(small, torch.ones_like(angle2), angle2))
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    kmat = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(kmat)
    return eye + a[..., None] * kmat + b[..., None] * (kmat @ kmat)


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle (angle in [0, pi])."""
    cos = ((rot[..., 0, 0] + rot[..., 1, 1] + rot[..., 2, 2] - 1.0) / 2.0).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    vee = torch.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0], rot[..., 1, 0] - rot[..., 0, 1]], -1)
    sin = torch.sin(angle)
    near_pi = angle > 3.0
    # generic case: vee = 2 sin(angle) axis
    scale = torch.where(sin.abs() < 1e-6, 0.5 + angle**2 / 12.0, angle / (2.0 * sin.clamp_min(1e-12)))
    out = vee * scale[..., None]
    if bool(near_pi.any()):
        # axis from the diagonal of (R + I) / 2 = a a^T
        sym = (rot + rot.transpose(-1, -2)) / 2.0 - cos[..., None, None] * torch.eye(3, dtype=rot.dtype, device=rot.device)
        diag = torch.diagonal(sym, dim1=-2, dim2=-1).clamp_min(0)
        i = diag.argmax(-1, keepdim=True)  # largest component
        col = torch.gather(sym, -1, i[..., None, :].expand(*sym.shape[:-1], 1)).squeeze(-1)
        axis = col / col.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        axis = axis * torch.where((axis * vee).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        out = torch.where(near_pi[..., None], axis * angle[..., None], out)
    return out


def forward_kinematics(rot: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global transforms of the 21-joint tree.

    rot (B, 21, 3, 3) local rotations (expressed in rest-pose axes, MANO convention), joints (B, 21, 3)
    rest joints -> (R_global (B, 21, 3, 3), posed joints (B, 21, 3)). Loops over the 5 tree levels only.
    """
    parents = torch.tensor(PARENTS)
    depth = torch.tensor(DEPTH)
    rg: list[torch.Tensor | None] = [None] * len(PARENTS)
    tg: list[torch.Tensor | None] = [None] * len(PARENTS)
    rg[0], tg[0] = rot[:, 0], joints[:, 0]
    for level in range(1, int(depth.max()) + 1):
        idx = torch.nonzero(depth == level).squeeze(1)
        par = parents[idx]
        r_par = torch.stack([rg[int(p)] for p in par], 1)  # (B, n, 3, 3)
        t_par = torch.stack([tg[int(p)] for p in par], 1)  # (B, n, 3)
        offset = joints[:, idx] - joints[:, par]  # (B, n, 3)
        r_new = r_par @ rot[:, idx]
        t_new = t_par + (r_par @ offset[..., None]).squeeze(-1)
        for n, j in enumerate(idx.tolist()):
            rg[j], tg[j] = r_new[:, n], t_new[:, n]
    return torch.stack(rg, 1), torch.stack(tg, 1)


def skin(vertices: torch.Tensor, weights: torch.Tensor, r_glob: torch.Tensor, t_glob: torch.Tensor,
         rest_joints: torch.Tensor) -> torch.Tensor:
    """Linear-blend skinning: rest vertices (B, V, 3), weights (V, 21), transforms -> posed (B, V, 3)."""
    t_rel = t_glob - (r_glob @ rest_joints[..., None]).squeeze(-1)  # (B, 21, 3): x -> R x + t_rel
    a = torch.cat([r_glob, t_rel[..., None]], dim=-1)  # (B, 21, 3, 4)
    blend = torch.einsum("vj,bjmn->bvmn", weights, a)  # (B, V, 3, 4)
    return (blend[..., :3] @ vertices[..., None]).squeeze(-1) + blend[..., 3]
