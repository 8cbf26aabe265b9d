"""Coarse vertex set (farthest point sampling) and its fixed upsampling to the full hand mesh."""
from __future__ import annotations

import torch


def farthest_point_sampling(points: torch.Tensor, n: int, start: int = 0) -> torch.Tensor:
    """Indices (n,) of n points of (V,3) chosen greedily far from each other (deterministic)."""
    v = points.shape[0]
    n = min(n, v)
    idx = torch.empty(n, dtype=torch.long)
    dist = torch.full((v,), float("inf"), dtype=points.dtype)
    cur = start
    for i in range(n):  # one-off precomputation, not a hot path
        idx[i] = cur
        dist = torch.minimum(dist, (points - points[cur]).norm(dim=-1))
        cur = int(dist.argmax())
    return idx


def upsampling_matrix(points: torch.Tensor, skin: torch.Tensor, coarse_idx: torch.Tensor, k: int = 4,
                      skin_penalty: float = 0.05) -> torch.Tensor:
    """(V, V') inverse-distance weights over the k nearest coarse vertices.

    Distance = Euclidean (m) + skin_penalty * L1 distance of skinning weights, so a vertex never
    borrows from a neighbouring finger that happens to be close in the rest pose.
    """
    cp, cs = points[coarse_idx], skin[coarse_idx]  # (V',3), (V',21)
    d = torch.cdist(points, cp) + skin_penalty * torch.cdist(skin, cs, p=1)  # (V,V')
    k = min(k, cp.shape[0])
    dk, ik = d.topk(k, dim=-1, largest=False)  # (V,k)
    w = 1.0 / (dk + 1e-6)
    w = w / w.sum(-1, keepdim=True)
    up = torch.zeros(points.shape[0], cp.shape[0], dtype=points.dtype)
    up.scatter_(1, ik, w)
    return up
