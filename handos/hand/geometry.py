"""Pure torch geometry of the hand model: forward kinematics over the 21-joint tree, linear-blend skinning.

Generic rotations (axis-angle <-> matrix) live in `handos.geometry`.
"""
from __future__ import annotations

import torch

from handos.hand.skeleton import DEPTH, PARENTS


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
