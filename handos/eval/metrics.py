"""Hand pose metrics: similarity Procrustes, PA-MPJPE/MPVPE, root-relative MPJPE, root depth, F-score, 2D/3D PCK, AUC.

Pure functions, vectorised over hands (leading batch dimensions). The 3D functions accept numpy arrays or
torch tensors (the result has the input's type); the rest are numpy. Units are whatever the inputs are in:
the eval command feeds millimetres. Missing joints are NaN (or masked out) and skipped.
Definitions follow the FreiHAND / HO-3D / DexYCB evaluation code (PCK curve = mean over joints of the
per-joint fraction under a threshold, AUC = normalised area under that curve) and the `handos eval` definitions in README.md.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from handos.geometry import Array, apply_similarity, procrustes_align, similarity_transform  # noqa: F401 (part of this module's API)
from handos.geometry import as_float as _as_float
from handos.geometry import valid_weights as _valid_mask
from handos.geometry import xp_of as _xp
from handos.geometry import zero_invalid as _zero_nan

EPS = 1e-12
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


def _mean_point_error(pred: Array, gt: Array, mask: Array | None) -> Array:
    """Mean Euclidean error over valid points, (...,); NaN where a hand has none."""
    xp = _xp(pred)
    w = _valid_mask(gt, mask)
    err = xp.sqrt(((_zero_nan(pred, w) - _zero_nan(gt, w)) ** 2).sum(-1))  # (..., N)
    n = w.sum(-1)
    out = (err * w).sum(-1) / xp.where(n > 0, n, xp.ones_like(n))
    return xp.where(n > 0, out, xp.full_like(out, float("nan")))


def per_joint_errors(pred: Array, gt: Array) -> Array:
    """Euclidean error per point (..., N); NaN where gt is NaN."""
    xp = _xp(pred)
    return xp.sqrt(((_as_float(pred) - _as_float(gt)) ** 2).sum(-1))


def mpjpe(pred: Array, gt: Array, mask: Array | None = None) -> Array:
    """Mean per-joint position error without any alignment, per hand (...,)."""
    return _mean_point_error(_as_float(pred), _as_float(gt), mask)


def pa_mpjpe(pred: Array, gt: Array, mask: Array | None = None) -> Array:
    """Procrustes-aligned MPJPE per hand (...,): similarity transform (scale, rotation, translation) first."""
    pred, gt = _as_float(pred), _as_float(gt)
    return _mean_point_error(procrustes_align(pred, gt, mask), gt, mask)


def pa_mpvpe(pred_vertices: Array, gt_vertices: Array) -> Array:
    """Procrustes-aligned mean per-vertex error per hand (...,); vertices must correspond one to one."""
    return pa_mpjpe(pred_vertices, gt_vertices)


def mpjpe_root_relative(pred: Array, gt: Array, root: int = 0, mask: Array | None = None) -> Array:
    """MPJPE after translating both skeletons so their root (wrist) joints coincide; no scale, no rotation."""
    pred, gt = _as_float(pred), _as_float(gt)
    return _mean_point_error(pred - pred[..., root : root + 1, :], gt - gt[..., root : root + 1, :], mask)


def root_depth_error(pred: Array, gt: Array, root: int = 0) -> Array:
    """Absolute error of the root joint's depth (z), per hand (...,)."""
    pred, gt = _as_float(pred), _as_float(gt)
    return abs(pred[..., root, 2] - gt[..., root, 2])


def _nearest_distances(a: Array, b: Array, max_elems: int = 20_000_000) -> Array:
    """For each point of a (B, P, 3), the distance to the nearest point of b (B, G, 3): (B, P)."""
    bsz, p, g = a.shape[0], a.shape[1], b.shape[1]
    chunk = max(1, max_elems // max(1, p * g))  # hands per chunk, to bound memory
    if isinstance(a, torch.Tensor):
        return torch.cat([torch.cdist(a[i : i + chunk], b[i : i + chunk]).min(-1).values for i in range(0, bsz, chunk)])
    out = []
    for i in range(0, bsz, chunk):
        aa, bb = a[i : i + chunk], b[i : i + chunk]
        d2 = (aa**2).sum(-1)[:, :, None] + (bb**2).sum(-1)[:, None, :] - 2 * aa @ bb.transpose(0, 2, 1)
        out.append(np.sqrt(np.maximum(d2.min(-1), 0.0)))
    return np.concatenate(out, 0)


def f_score(pred_points: Array, gt_points: Array, threshold: float) -> tuple[Array, Array, Array]:
    """F-score (B,) at `threshold` between point sets pred (B, P, 3) and gt (B, G, 3), plus precision and recall.

    precision = fraction of predicted points within `threshold` of some GT point; recall = fraction of GT
    points within `threshold` of some predicted point; F = harmonic mean (0 where both are 0).
    """
    pred, gt = _as_float(pred_points), _as_float(gt_points)
    xp = _xp(pred)
    squeeze = pred.ndim == 2
    if squeeze:
        pred, gt = pred[None], gt[None]
    near_pred = _nearest_distances(pred, gt) < threshold  # (B, P)
    near_gt = _nearest_distances(gt, pred) < threshold  # (B, G)
    if xp is torch:
        near_pred, near_gt = near_pred.to(pred.dtype), near_gt.to(pred.dtype)
    precision, recall = near_pred.mean(-1), near_gt.mean(-1)
    denom = precision + recall
    f = xp.where(denom > 0, 2 * precision * recall / xp.where(denom > 0, denom, xp.ones_like(denom)), xp.zeros_like(denom))
    if squeeze:
        return f[0], precision[0], recall[0]
    return f, precision, recall


# ---------------------------------------------------------------- 3D PCK / AUC (numpy)


def pck_curve(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """PCK at each threshold (T,): mean over joints of the fraction of that joint's valid errors <= threshold.

    errors: (M, J) per-hand per-joint errors (NaN = not evaluated); joints with no valid sample are skipped.
    """
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim == 1:
        e = e[:, None]
    valid = np.isfinite(e)  # (M, J)
    n = valid.sum(0)  # (J,)
    keep = n > 0
    if not keep.any():
        return np.full(len(thresholds), np.nan)
    e, valid, n = e[:, keep], valid[:, keep], n[keep]
    hits = (np.where(valid, e, np.inf)[None] <= np.asarray(thresholds, dtype=np.float64)[:, None, None])  # (T, M, J)
    return (hits.sum(1) / n[None]).mean(-1)


def auc(errors: np.ndarray, lo: float = 0.0, hi: float = 50.0, steps: int = 100) -> float:
    """Normalised area under the PCK curve between `lo` and `hi` (`steps` thresholds); 1 for a perfect prediction."""
    thr = np.linspace(lo, hi, steps)
    curve = pck_curve(errors, thr)
    if not np.isfinite(curve).all():
        return float("nan")
    return float(_trapezoid(curve, thr) / (hi - lo))


def pck_3d(errors: np.ndarray, threshold: float) -> float:
    """3D PCK at one threshold (same units as `errors`)."""
    return float(pck_curve(errors, np.array([threshold]))[0])


# ---------------------------------------------------------------- 2D (numpy)


def tight_box_size(joints_2d: np.ndarray) -> np.ndarray:
    """Max side of the tight box of the labelled (finite) 2D joints, per hand: (B, J, 2) -> (B,); NaN if none."""
    j = np.asarray(joints_2d, dtype=np.float64)
    valid = np.isfinite(j).all(-1)  # (B, J)
    lo = np.where(valid[..., None], j, np.inf).min(-2)  # (B, 2)
    hi = np.where(valid[..., None], j, -np.inf).max(-2)
    size = (hi - lo).max(-1)
    return np.where(valid.any(-1), size, np.nan)


def joint_errors_2d(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Pixel distance per joint (B, J); NaN where the GT joint is unlabelled."""
    return np.sqrt(((np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64)) ** 2).sum(-1))


def pck_2d_hits(pred: np.ndarray, gt: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint hits (B, J) of 2D PCK at `alpha` x (max side of the hand's tight GT joint box), and the labelled mask."""
    gt = np.asarray(gt, dtype=np.float64)
    labelled = np.isfinite(gt).all(-1)
    err = joint_errors_2d(pred, gt)
    thr = alpha * tight_box_size(gt)  # (B,)
    hits = labelled & (np.where(labelled, err, np.inf) <= thr[:, None])
    return hits, labelled


def pck_2d(pred: np.ndarray, gt: np.ndarray, alpha: float) -> float:
    """Fraction of labelled GT joints within alpha x box size (all hands given are counted as matched)."""
    hits, labelled = pck_2d_hits(pred, gt, alpha)
    return float(hits.sum() / max(1, labelled.sum()))


def handedness_accuracy(pred: Sequence[str], gt: Sequence[str | None]) -> float:
    """Fraction of hands whose predicted handedness equals the GT one; hands with GT None are skipped (NaN if none)."""
    pairs = [(p, g) for p, g in zip(pred, gt) if g is not None]
    if not pairs:
        return float("nan")
    return float(np.mean([p == g for p, g in pairs]))
