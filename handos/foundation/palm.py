"""Palm detection post-processing, as MediaPipe's `PalmDetectionCpu` graph (mediapipe==0.10.21).

Graph facts used here (TensorsToDetectionsCalculatorOptions / NonMaxSuppressionCalculatorOptions of the
wheel's PalmDetectionCpu): 2016 boxes x 18 coords (box cx, cy, w, h then 7 keypoints x, y; x first,
`reverse_output_order`), all divided by 192 and scaled by the anchor (fixed size 1), scores
`sigmoid(clip(logit, -100, 100))`, `min_score_thresh` 0.5; weighted NMS with IoU threshold 0.3;
letterbox padding (zero border) removed afterwards. The 7 keypoints: 0 wrist centre, 1 index-finger
base, 2 middle-finger base, 3 ring-finger base, 4 pinky base, 5 thumb base, 6 thumb tip (approximately).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from handos.geometry import Array, box_iou, to_host, xp_of

__all__ = ["DetectorOptions", "PALM_OPTIONS", "letterbox_rois", "DecodeTables", "decode_tables", "host_tables", "decode_detections",
           "palm_scores", "decode_above", "weighted_nms", "weighted_nms_arrays", "remove_letterbox", "PalmDetections"]


@dataclass(frozen=True)
class DetectorOptions:
    """Decoding options of the palm detector's TensorsToDetectionsCalculator (from the graph)."""

    input_size: int = 192
    num_keypoints: int = 7
    box_coord_offset: int = 0
    keypoint_coord_offset: int = 4
    x_scale: float = 192.0
    y_scale: float = 192.0
    w_scale: float = 192.0
    h_scale: float = 192.0
    score_clipping_thresh: float = 100.0
    min_score_thresh: float = 0.5
    nms_iou: float = 0.3


PALM_OPTIONS = DetectorOptions()


@dataclass
class PalmDetections:
    """Palm detections of one image after NMS: boxes (K,4) xyxy, keypoints (K,7,2), scores (K,) (tensors, or
    numpy arrays on the CPU pipeline's host path)."""

    boxes: torch.Tensor
    keypoints: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        """Number of detections."""
        return int(self.scores.shape[0])


def letterbox_rois(sizes: Array, input_size: int = 192) -> tuple[Array, Array]:
    """Letterbox ROIs (B,5) px and paddings (B,4) [l, t, r, b] (fractions) for image sizes (B,2) [W,H], float64,
    numpy for a numpy array (the CPU pipeline: the same float64 values at numpy's lower per-call cost), else torch.

    As ImageToTensorCalculator with keep_aspect_ratio: the ROI is the whole image centred at (W/2, H/2),
    grown on its short side to a square; the padding is the fraction of the square that is border.
    """
    xp = xp_of(sizes)
    sizes = sizes.astype(np.float64) if xp is np else sizes.to(torch.float64)
    W, H = sizes[:, 0], sizes[:, 1]
    side = xp.maximum(W, H)
    pad_x = (1 - W / side) / 2  # horizontal padding per side
    pad_y = (1 - H / side) / 2
    rois = xp.stack([W / 2, H / 2, side, side, xp.zeros_like(W)], -1)
    return rois, xp.stack([pad_x, pad_y, pad_x, pad_y], -1)


@dataclass(frozen=True)
class DecodeTables:
    """Per-anchor tables of `decode_detections` for one anchor set (`decode_tables`: build once, decode often)."""

    anchor_center: torch.Tensor  # (A,2) x, y
    anchor_size: torch.Tensor  # (A,2) w, h
    box_scale: torch.Tensor  # (2,) x, y scale of the box centre (w, h scale of its size below)
    size_scale: torch.Tensor  # (2,)
    # keypoints as (A,2n) rows against tables repeated n times: the same values as (A,n,2) ops broadcast over
    # pairs, which run ~10x slower on the CPU (TensorIterator's inner loop of 2)
    keypoint_scale: torch.Tensor  # (2n,)
    keypoint_size: torch.Tensor  # (A,2n) anchor w, h per keypoint
    keypoint_center: torch.Tensor  # (A,2n) anchor x, y per keypoint


def decode_tables(anchors: torch.Tensor, opts: DetectorOptions = PALM_OPTIONS,
                  dtype: torch.dtype = torch.float32) -> DecodeTables:
    """The tables `decode_detections` needs for anchors (A,4) [cx, cy, w, h] (normalised), on their device."""
    a = anchors.to(dtype)
    n = opts.num_keypoints
    box_scale = torch.tensor([opts.x_scale, opts.y_scale], dtype=dtype, device=a.device)
    return DecodeTables(
        anchor_center=a[:, :2].contiguous(), anchor_size=a[:, 2:4].contiguous(), box_scale=box_scale,
        size_scale=torch.tensor([opts.w_scale, opts.h_scale], dtype=dtype, device=a.device),
        keypoint_scale=box_scale.repeat(n), keypoint_size=a[:, 2:4].repeat(1, n).contiguous(),
        keypoint_center=a[:, :2].repeat(1, n).contiguous())


def palm_scores(score_logits: torch.Tensor, opts: DetectorOptions = PALM_OPTIONS) -> torch.Tensor:
    """Score logits (B,A,1) -> scores (B,A): the sigmoid of the clipped logits."""
    logits = score_logits[..., 0]
    if opts.score_clipping_thresh:
        logits = logits.clamp(-opts.score_clipping_thresh, opts.score_clipping_thresh)
    return torch.sigmoid(logits)


def host_tables(tables: DecodeTables) -> DecodeTables:
    """The same tables as numpy arrays on the host (what `decode_above` reads, once, not per call)."""
    return DecodeTables(**{f.name: to_host(getattr(tables, f.name)).copy() for f in fields(tables)})


def decode_detections(regressors: torch.Tensor, score_logits: torch.Tensor, anchors: torch.Tensor | DecodeTables,
                      opts: DetectorOptions = PALM_OPTIONS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw outputs (B,A,18), (B,A,1) -> boxes (B,A,4) xyxy, keypoints (B,A,7,2) (normalised), scores (B,A).

    anchors: (A,4) [cx, cy, w, h], or their `decode_tables` (what a caller decoding many batches keeps).
    """
    t = anchors if isinstance(anchors, DecodeTables) else decode_tables(anchors, opts, regressors.dtype)
    boxes, kp = _decode_rows(regressors, t.anchor_center, t.anchor_size, t.box_scale, t.size_scale,
                             t.keypoint_scale, t.keypoint_size, t.keypoint_center, opts)
    return boxes, kp, palm_scores(score_logits, opts)


def decode_above(regressors: np.ndarray, scores: np.ndarray, tables: DecodeTables, min_score: float,
                 opts: DetectorOptions = PALM_OPTIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's anchors scoring >= min_score, decoded on the host: regressors (A,18) and `palm_scores` (A,)
    as numpy -> boxes (m,4) xyxy, keypoints (m,7,2) (normalised), scores (m,), in anchor order.

    The same float32 operations as `decode_detections` on the kept rows only (a handful of 2016), so the values
    are identical; the tables live on the CPU.
    """
    keep = np.flatnonzero(scores >= min_score)
    t = [to_host(v) for v in (tables.anchor_center, tables.anchor_size, tables.box_scale, tables.size_scale,
                              tables.keypoint_scale, tables.keypoint_size, tables.keypoint_center)]  # `host_tables`: as they are
    for i in (0, 1, 5, 6):  # the per-anchor tables
        t[i] = t[i][keep]
    boxes, kp = _decode_rows(regressors[keep], *t, opts)
    return boxes, kp, scores[keep]


def _decode_rows(regressors: Array, anchor_center: Array, anchor_size: Array, box_scale: Array, size_scale: Array,
                 keypoint_scale: Array, keypoint_size: Array, keypoint_center: Array,
                 opts: DetectorOptions) -> tuple[Array, Array]:
    """Regressor rows (…,A,18) -> boxes (…,A,4) xyxy and keypoints (…,A,n,2), numpy or torch, with the tables'
    rows matching the regressors' (see DecodeTables)."""
    o = opts.box_coord_offset
    center = regressors[..., o:o + 2] / box_scale * anchor_size + anchor_center  # (…,A,2)
    wh = regressors[..., o + 2:o + 4] / size_scale * anchor_size
    boxes = xp_of(regressors).concatenate([center - wh / 2, center + wh / 2], -1)  # (…,A,4) xmin, ymin, xmax, ymax
    k, n = opts.keypoint_coord_offset, opts.num_keypoints
    kp = regressors[..., k:k + 2 * n] / keypoint_scale * keypoint_size + keypoint_center  # (…,A,2n)
    return boxes, kp.reshape(kp.shape[:-1] + (n, 2))


def weighted_nms(boxes: torch.Tensor, keypoints: torch.Tensor, scores: torch.Tensor,
                 iou_threshold: float = 0.3, max_detections: int | None = None) -> PalmDetections:
    """MediaPipe's WEIGHTED non-max suppression on one image's candidates (boxes (M,4) xyxy), as tensors on the
    inputs' device and dtype (the work is `weighted_nms_arrays` on the host)."""
    b, k, s = weighted_nms_arrays(*(to_host(t) for t in (boxes, keypoints, scores)),
                                  iou_threshold, max_detections)
    like = {"device": boxes.device, "dtype": boxes.dtype}
    return PalmDetections(torch.as_tensor(b, **like), torch.as_tensor(k, **like),
                          torch.as_tensor(s, device=scores.device, dtype=scores.dtype))


def weighted_nms_arrays(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3,
                        max_detections: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-max suppression on numpy arrays: boxes (M,4) xyxy, keypoints (M,7,2), scores (M,)
    -> the same for the K kept detections.

    Candidates are visited by descending score; each cluster (IoU with the top box > threshold, the top
    box included) is replaced by the score-weighted mean box and keypoints, keeping the top score.
    The candidates are few (tens) and the loop data-dependent: numpy, as each torch op on such tiny tensors
    costs more than its arithmetic.
    """
    order = np.argsort(-scores, kind="stable")
    b, k, s = boxes[order], keypoints[order], scores[order]
    # Invalid (negative size) boxes are dropped by MediaPipe's decoder.
    valid = (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])
    b, k, s = b[valid], k[valid], s[valid]
    iou = box_iou(b, b)  # (M,M), in the boxes' dtype
    remaining = np.ones(len(s), dtype=bool)
    out_b, out_k, out_s = [], [], []
    while remaining.any():
        top = int(np.argmax(remaining))  # the best remaining candidate (they are sorted)
        cluster = remaining & (iou[top] > iou_threshold)
        cluster[top] = True  # IoU of a box with itself is 1 unless degenerate
        w = s[cluster]  # (c,)
        tot = w.sum()
        out_b.append((b[cluster] * w[:, None]).sum(0) / tot)
        out_k.append((k[cluster] * w[:, None, None]).sum(0) / tot)
        out_s.append(s[top])
        remaining &= ~cluster
        if max_detections is not None and len(out_s) >= max_detections:
            break
    if not out_s:
        return b[:0], k[:0], s[:0]
    return np.stack(out_b), np.stack(out_k), np.stack(out_s)


def remove_letterbox(det: PalmDetections, padding: torch.Tensor | np.ndarray) -> PalmDetections:
    """Undo the letterbox (padding (4,) [l, t, r, b] fractions): normalised input -> normalised image.

    Tensors, or numpy arrays (the CPU pipeline's host path) with padding in the boxes' dtype."""
    pad = padding.to(det.boxes.dtype) if isinstance(padding, torch.Tensor) else padding
    off = pad[:2]
    span = 1 - pad[:2] - pad[2:]
    boxes = xp_of(det.boxes).concatenate([(det.boxes[:, :2] - off) / span, (det.boxes[:, 2:] - off) / span], -1)
    return PalmDetections(boxes, (det.keypoints - off) / span, det.scores)
