"""One-to-one matching of predicted to ground-truth hands in an image (the `handos eval` matching rule).

Cost = mean 2D distance over the GT hand's labelled joints; Hungarian assignment
(scipy.optimize.linear_sum_assignment); a pair only counts when its cost is under
`max_rel_dist` x the max side of the tight box of that GT hand's labelled joints.
Unmatched GT hands are misses (all their joints count as PCK misses); unmatched predictions
are false positives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from handos.eval.metrics import tight_box_size
from handos.hand.skeleton import NUM_JOINTS

MAX_REL_DIST = 0.5  # a match needs mean joint distance < 0.5 x max side of the tight GT joint box
_INVALID = 1e12  # cost of a pair that may not be matched


@dataclass
class Matching:
    """Result of matching P predictions to G GT hands in one image."""

    pairs: np.ndarray  # (K, 2) int: [pred index, gt index]
    distances: np.ndarray  # (K,) mean 2D joint distance of each pair, px
    unmatched_pred: np.ndarray  # (P - K,) int
    unmatched_gt: np.ndarray  # (G - K,) int


def mean_joint_distance(pred_2d: np.ndarray, gt_2d: np.ndarray) -> np.ndarray:
    """(P, G) mean distance over each GT hand's labelled joints; pred (P, J, 2), gt (G, J, 2) with NaN = unlabelled."""
    pred = np.asarray(pred_2d, dtype=np.float64)
    gt = np.asarray(gt_2d, dtype=np.float64)
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros((len(pred), len(gt)))
    labelled = np.isfinite(gt).all(-1)  # (G, J)
    d = np.sqrt(((pred[:, None] - gt[None]) ** 2).sum(-1))  # (P, G, J); NaN where unlabelled
    n = labelled.sum(-1)  # (G,)
    total = np.where(labelled[None], d, 0.0).sum(-1)
    return np.where(n[None] > 0, total / np.maximum(n, 1)[None], np.nan)


def match_hands(pred_2d: np.ndarray, gt_2d: np.ndarray, max_rel_dist: float = MAX_REL_DIST) -> Matching:
    """Hungarian matching of predicted hands (P, J, 2) to GT hands (G, J, 2) on mean 2D joint distance."""
    gt = np.asarray(gt_2d, dtype=np.float64).reshape(-1, NUM_JOINTS, 2) if np.size(gt_2d) else np.zeros((0, NUM_JOINTS, 2))
    pred = np.asarray(pred_2d, dtype=np.float64).reshape(-1, NUM_JOINTS, 2) if np.size(pred_2d) else np.zeros((0, NUM_JOINTS, 2))
    p, g = len(pred), len(gt)
    if p == 0 or g == 0:
        return Matching(np.zeros((0, 2), int), np.zeros(0), np.arange(p), np.arange(g))
    dist = mean_joint_distance(pred, gt)  # (P, G)
    limit = max_rel_dist * tight_box_size(gt)  # (G,)
    allowed = np.isfinite(dist) & (dist < limit[None])
    cost = np.where(allowed, dist, _INVALID)
    rows, cols = linear_sum_assignment(cost)
    keep = allowed[rows, cols]
    rows, cols = rows[keep], cols[keep]
    pairs = np.stack([rows, cols], 1).astype(int)
    return Matching(
        pairs=pairs,
        distances=dist[rows, cols],
        unmatched_pred=np.setdiff1d(np.arange(p), rows),
        unmatched_gt=np.setdiff1d(np.arange(g), cols),
    )
