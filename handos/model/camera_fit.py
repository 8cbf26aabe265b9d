"""Place root-relative hands in the camera so their joints reproject onto the 2D keypoints."""
from __future__ import annotations

import torch


def fit_translation(joints_rr: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor, camera: torch.Tensor,
                    prior_t: torch.Tensor, prior_weight: float = 1e-3, fit_depth: bool = True) -> torch.Tensor:
    """Least-squares camera translation t (N,3) with K(joints_rr + t) ~ keypoints, pulled weakly towards prior_t.

    fit_depth=False keeps the prior's depth tz and solves only tx, ty (closed form, per hand).

    joints_rr (N,21,3) m root-relative; keypoints (N,21,2) px; weights (N,21) >= 0; camera (N,4) [fx,fy,cx,cy];
    prior_t (N,3) m. Linear in t: (u - cx)(Z + tz) = fx (X + tx) and the same for v, solved per hand.
    """
    if not fit_depth:  # per joint: tx = (u - cx) (Z + tz) / fx - X, the same for y; weighted mean over joints
        w = weights.clamp(min=0).unsqueeze(-1) + 1e-9  # (N,21,1)
        cam, tz = camera.unsqueeze(1), prior_t[..., 2:]  # (N,1,4), (N,1)
        depth = joints_rr[..., 2:] + tz.unsqueeze(1)  # (N,21,1)
        txy = (w * ((keypoints - cam[..., 2:]) * depth / cam[..., :2] - joints_rr[..., :2])).sum(1) / w.sum(1)  # (N,2)
        return torch.cat([txy, tz], -1)
    fx, fy, cx, cy = camera.unbind(-1)  # (N,)
    X, Y, Z = joints_rr.unbind(-1)  # (N,21)
    du = keypoints[..., 0] - cx[:, None]  # (N,21)
    dv = keypoints[..., 1] - cy[:, None]
    zeros = torch.zeros_like(du)
    # rows: fx*tx - du*tz = du*Z - fx*X ;  fy*ty - dv*tz = dv*Z - fy*Y   (units of px*m)
    a_u = torch.stack([fx[:, None].expand_as(du), zeros, -du], -1)  # (N,21,3)
    a_v = torch.stack([zeros, fy[:, None].expand_as(dv), -dv], -1)
    b_u = du * Z - fx[:, None] * X
    b_v = dv * Z - fy[:, None] * Y
    A = torch.cat([a_u, a_v], 1)  # (N,42,3)
    b = torch.cat([b_u, b_v], 1)  # (N,42)
    w = torch.cat([weights, weights], 1).clamp(min=0)  # (N,42)
    # normalise rows by the prior depth so the prior weight is in pixel-like units
    scale = fx[:, None] / prior_t[:, 2:3].clamp(min=1e-3)  # (N,1)
    reg = prior_weight * (scale * fx[:, None]).squeeze(1)  # (N,)
    AtA = torch.einsum("nki,nk,nkj->nij", A, w, A) + reg[:, None, None] * torch.eye(3, dtype=A.dtype, device=A.device)
    Atb = torch.einsum("nki,nk,nk->ni", A, w, b) + reg[:, None] * prior_t
    return torch.linalg.solve(AtA, Atb)
