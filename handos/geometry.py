"""Generic geometry shared by the whole library: projection, rotations, similarity alignment, box IoU.

A leaf module: it imports only numpy and torch. Pure functions; functions typed `Array` accept numpy
arrays or torch tensors and return the input's kind (device and dtype follow the inputs).
Hand-specific geometry (forward kinematics, skinning, chirality) lives in `handos.hand`.
"""
from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor

EPS = 1e-12


def xp_of(x: Array):
    """The array module (numpy or torch) that owns `x`."""
    return torch if isinstance(x, torch.Tensor) else np


def to_host(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """A tensor's values as a numpy array: a view of a CPU tensor (no copy), a copy of one on another device;
    a numpy array as it is.

    For xp_of geometry on a handful of hands, numpy's per-call cost is ~3x below torch's (same math).
    """
    if isinstance(t, np.ndarray):
        return t
    if t.is_cpu and not t.requires_grad:  # no dispatch at all (detach and cpu are ops, each a few us right after the nets)
        return t.numpy()
    return t.detach().cpu().numpy()


def as_float(x: Array) -> Array:
    """`x` as a floating array of its own kind (float64 for numpy inputs and integer tensors)."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.double()
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------------------- projection

def project(points: Array, camera: Array, min_depth: float | None = None) -> Array:
    """Pinhole projection of camera-frame points (..., 3) with intrinsics (..., 4) [fx, fy, cx, cy] -> (..., 2) px.

    `camera` broadcasts against the points row by row: pass (N, 1, 4) for points (N, K, 3). Depth is
    clamped to `min_depth` when given (points behind the camera then land far away, not mirrored).
    """
    z = points[..., 2:3]  # (..., 1)
    if min_depth is not None:
        z = z.clamp_min(min_depth) if isinstance(z, torch.Tensor) else np.maximum(z, min_depth)
    return points[..., :2] / z * camera[..., :2] + camera[..., 2:4]


def intrinsics_of(k: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) intrinsic matrices K (no skew) -> (..., 4) [fx, fy, cx, cy]."""
    return torch.stack([k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2]], -1)


# ----------------------------------------------------------------------------------------------- rotations

def rot2d(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 2, 2) for angles (...,) in radians (image axes: x right, y down)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


# the Levi-Civita symbol as a (3, 9) map: v @ SKEW_MAP is the cross-product matrix [v]x, flattened row by row
SKEW_MAP = ((0, 0, 0, 0, 0, -1, 0, 1, 0), (0, 0, 1, 0, 0, 0, -1, 0, 0), (0, -1, 0, 1, 0, 0, 0, 0, 0))


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices [v]x (…,3,3) of vectors v (…,3): [v]x w = v x w."""
    return (v @ v.new_tensor(SKEW_MAP)).unflatten(-1, (3, 3))


def det3(m: torch.Tensor) -> torch.Tensor:
    """Determinants (…,) of 3x3 matrices (…,3,3): the triple product of their rows."""
    r0, r1, r2 = m.unbind(-2)
    return (r0 * torch.linalg.cross(r1, r2)).sum(-1)


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (..., 3) axis-angle -> (..., 3, 3) rotation matrices (smooth at zero)."""
    angle2 = (rotvec * rotvec).sum(-1, keepdim=True)  # (..., 1)
    small = angle2 < 1e-8
    angle = torch.sqrt(torch.where(small, torch.ones_like(angle2), angle2))
    # sin(t)/t and (1-cos t)/t^2 with Taylor fallbacks near zero
    a = torch.where(small, 1.0 - angle2 / 6.0, torch.sin(angle) / angle)
    b = torch.where(small, 0.5 - angle2 / 24.0, (1.0 - torch.cos(angle)) / torch.where(small, torch.ones_like(angle2), angle2))
    kmat = skew(rotvec)  # (..., 3, 3)
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


# ------------------------------------------------------------------------------------ similarity alignment

def valid_weights(gt: Array, mask: Array | None) -> Array:
    """(..., N) float weights: 1 where the GT point is finite (and `mask` allows it), else 0."""
    finite = xp_of(gt).isfinite(gt).all(-1)
    if isinstance(gt, torch.Tensor):
        if mask is not None:
            finite = finite & torch.as_tensor(mask, device=gt.device).bool()
        return finite.to(gt.dtype)
    if mask is not None:
        finite = finite & np.asarray(mask, dtype=bool)
    return finite.astype(gt.dtype)


def zero_invalid(x: Array, w: Array) -> Array:
    """`x` with rows whose weight is 0 set to 0 (so NaNs cannot leak into sums)."""
    xp = xp_of(x)
    return xp.where(w[..., None] > 0, x, xp.zeros_like(x))


def similarity_transform(src: Array, dst: Array, mask: Array | None = None) -> tuple[Array, Array, Array]:
    """Scale s (...,), rotation R (..., 3, 3) and translation t (..., 3) minimising |s R src + t - dst|^2 (Umeyama).

    src, dst: (..., N, 3). R is a proper rotation (det +1): a mirrored copy is NOT aligned away.
    Points where dst is NaN or `mask` (..., N) is false are ignored.
    """
    xp = xp_of(src)
    src, dst = as_float(src), as_float(dst)
    w = valid_weights(dst, mask)  # (..., N)
    src, dst = zero_invalid(src, w), zero_invalid(dst, w)
    wn = w / (w.sum(-1)[..., None] + EPS)  # (..., N) normalised weights
    mu_s = (wn[..., None] * src).sum(-2)  # (..., 3)
    mu_d = (wn[..., None] * dst).sum(-2)
    xs = (src - mu_s[..., None, :]) * w[..., None]
    xd = (dst - mu_d[..., None, :]) * w[..., None]
    cov = xp.einsum("...ni,...nj->...ij", xd * wn[..., None], xs)  # (..., 3, 3) = sum w xd xs^T
    u, sig, vt = xp.linalg.svd(cov)
    det = xp.linalg.det(u @ vt)  # (...,)
    d = xp.where(det < 0, -xp.ones_like(det), xp.ones_like(det))
    diag = xp.stack([xp.ones_like(d), xp.ones_like(d), d], -1)  # (..., 3)
    rot = (u * diag[..., None, :]) @ vt  # U diag(1, 1, d) V^T
    var_s = (wn * (xs**2).sum(-1)).sum(-1)  # (...,)
    scale = (sig * diag).sum(-1) / (var_s + EPS)
    trans = mu_d - scale[..., None] * (rot @ mu_s[..., None])[..., 0]
    return scale, rot, trans


def apply_similarity(points: Array, scale: Array, rot: Array, trans: Array) -> Array:
    """s R p + t for points (..., N, 3)."""
    return scale[..., None, None] * (points @ rot.swapaxes(-1, -2)) + trans[..., None, :]


def procrustes_align(pred: Array, gt: Array, mask: Array | None = None) -> Array:
    """`pred` (..., N, 3) moved onto `gt` by the best similarity transform (rotation without reflection)."""
    s, r, t = similarity_transform(pred, gt, mask)
    return apply_similarity(as_float(pred), s, r, t)


# --------------------------------------------------------------------------------------------------- boxes

def box_iou(a: Array, b: Array) -> Array:
    """IoU (N, M) of xyxy boxes a (N, 4) and b (M, 4); numpy inputs keep a float dtype, others are read as float64."""
    if not isinstance(a, torch.Tensor):
        a, b = np.asarray(a), np.asarray(b)
        dtype = np.result_type(a, b) if np.issubdtype(np.result_type(a, b), np.floating) else np.float64
        a, b = a.astype(dtype, copy=False).reshape(-1, 4), b.astype(dtype, copy=False).reshape(-1, 4)
    xp = xp_of(a)
    # numpy's np.maximum(x, 0) is the same as clip(min=0) at a fraction of the call's cost
    pos = (lambda x: x.clamp(min=0)) if xp is torch else (lambda x: np.maximum(x, 0))  # noqa: E731
    # x and y apart, not as (N, M, 2) pairs: ops over a last axis of 2 cost several times more on small inputs
    ix = xp.minimum(a[:, None, 2], b[None, :, 2]) - xp.maximum(a[:, None, 0], b[None, :, 0])  # (N, M)
    iy = xp.minimum(a[:, None, 3], b[None, :, 3]) - xp.maximum(a[:, None, 1], b[None, :, 1])
    inter = pos(ix) * pos(iy)  # (N, M)
    area_a = pos(a[:, 2] - a[:, 0]) * pos(a[:, 3] - a[:, 1])  # (N,)
    area_b = pos(b[:, 2] - b[:, 0]) * pos(b[:, 3] - b[:, 1])  # (M,)
    union = area_a[:, None] + area_b[None, :] - inter  # >= inter >= 0, and 0 only where inter is
    return inter / (union.clamp(min=1e-12) if xp is torch else np.maximum(union, 1e-12))


__all__ = ["Array", "apply_similarity", "as_float", "axis_angle_to_matrix", "box_iou", "det3", "intrinsics_of",
           "matrix_to_axis_angle", "procrustes_align", "project", "rot2d", "similarity_transform", "skew", "to_host",
           "valid_weights", "xp_of", "zero_invalid"]
