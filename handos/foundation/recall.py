"""The recall booster: hands MediaPipe's own path misses, found on top of the frozen foundation.

With `FoundationConfig.recall_boost` ("fast" by default; "off" is exactly MediaPipe), palm candidates down
to `boost_min_score` are tried in the slots (`max_hands`) MediaPipe's own hands leave free, and extra
detector views (the letterbox zoomed out 1.5x for big hands, square tiles along the long side of elongated
images for small ones; "search": a multi-scale grid and a flipped pass) add candidates - in "fast" only on
images where MediaPipe's path found nothing, in "full"/"search" on every image with a free slot. Every extra
hand must be confirmed by the landmark net (presence >= `boost_min_presence`) and must not repeat a kept
hand (`dedup_hands`). MediaPipe's own hands are never changed by the booster. Measured with
tests/parity/foundation_metrics.py (found / hands, false positives, CPU ms per image, 2-core VM):
  set          off             fast            full            search
  ge2019       199/200 0 59ms  200/200 0 45ms  200/200 0 75ms  200/200 0 884ms
  interhand    1/6     0       2/6     0       2/6     0       4/6     0
  panoptic     3/4     0       4/4     0       4/4     0       4/4     0
  freihand     6/8     0       7/8     0       7/8     0       8/8     0
  onehand10k, rhd: all found in every mode, no false positives.

Two steps, around the landmark net (`Foundation.detect`):
1. `add_recall_candidates`: after MediaPipe's palm ROIs of each image, extra palm ROIs flagged is_boost;
2. `confirm_recall`: after the landmark net, boosted hands need `boost_min_presence`, take their presence
   as score, and must not repeat a kept hand (`dedup_hands`, which also caps `max_hands` per image).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from handos.foundation.palm import weighted_nms_arrays
from handos.foundation.roi import box_iou, roi_from_palm
from handos.foundation.types import FoundationConfig, FoundationOutput
from handos.geometry import to_host

__all__ = ["SEARCH_SCALES", "recall_views", "add_recall_candidates", "confirm_recall", "dedup_hands"]

SEARCH_SCALES = (1.5, 1.0, 0.6, 0.36)  # "search" views: square side / image long side

# palm_candidates(image_index (V,), views (V,5) px, flip) -> (boxes, keypoints, scores) decoded in image px
PalmCandidates = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
# per image: (rois (k,5) px, scores (k,), is_boost (k,) bool)
PalmRois = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def recall_views(size: tuple[int, int], config: FoundationConfig, mode: str = "full") -> list[list[float]]:
    """Extra square detector views [cx,cy,side,side,0] of an image (W,H).

    "fast"/"full": a zoomed-out letterbox and tiles on the long side; "search": at each of SEARCH_SCALES,
    squares overlapping by about a third that cover the image.
    """
    W, H = size
    if mode == "search":
        views = []
        for scale in SEARCH_SCALES:
            side = max(W, H) * scale
            nx = 1 if side >= W else int(math.ceil(1.5 * W / side))
            ny = 1 if side >= H else int(math.ceil(1.5 * H / side))
            for cx in np.linspace(min(side, W) / 2, W - min(side, W) / 2, nx):
                for cy in np.linspace(min(side, H) / 2, H - min(side, H) / 2, ny):
                    views.append([float(cx), float(cy), side, side, 0.0])
        return views
    side, short = max(W, H), min(W, H)
    views = []
    if config.boost_zoom_out > 1:
        z = side * config.boost_zoom_out
        views.append([W / 2, H / 2, z, z, 0.0])
    if side >= config.boost_tile_aspect * short:
        n = int(math.ceil(side / short)) + 1
        for t in range(n):
            c = short / 2 + t * (side - short) / (n - 1)
            views.append([c, H / 2, short, short, 0.0] if W > H else [W / 2, c, short, short, 0.0])
    return views


# one detector view's candidates of one image, down to boost_min_score, in image px, on the host (numpy: a few
# dozen candidates, a data-dependent NMS): (image position in the batch, boxes (m,4) xyxy, keypoints (m,7,2),
# scores (m,))
ViewCandidates = tuple[int, np.ndarray, np.ndarray, np.ndarray]


def _selected(j: int, boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, min_score: float,
              square: tuple[np.ndarray, np.ndarray] | None = None) -> ViewCandidates:
    """One view's candidates (A,...) at or above min_score; with `square` (side, top-left (2,)), moved from the
    view's unit square to image px."""
    keep = scores >= min_score  # (A,): the transform below is per anchor, so select first
    boxes, keypoints = boxes[keep], keypoints[keep]
    if square is not None:
        side, origin = square
        boxes, keypoints = boxes * side + np.tile(origin, 2), keypoints * side + origin
    return j, boxes, keypoints, scores[keep]


def _letterbox_candidates(letterbox: list[tuple[np.ndarray, np.ndarray, np.ndarray]], lb_rois: torch.Tensor,
                          images: list[int], min_score: float) -> list[ViewCandidates]:
    """MediaPipe's own letterbox pass (per image: normalised boxes, keypoints, scores) as candidates of `images`,
    in image px."""
    v0 = to_host(lb_rois).astype(np.float32)
    side, org = v0[:, 2], v0[:, :2] - v0[:, 2:4] / 2  # (b,), (b,2)
    return [_selected(j, *letterbox[j], min_score, (side[j], org[j])) for j in images]


def _view_candidates(sizes: torch.Tensor, view_for: list[int], lb_rois: torch.Tensor, config: FoundationConfig,
                     mode: str, palm_candidates: PalmCandidates) -> list[ViewCandidates]:
    """Candidates of the flipped letterbox and the extra views of images `view_for` (positions in the batch)."""
    vidx, views = [], []
    for j in view_for:
        for v in recall_views(tuple(sizes[j].tolist()), config, mode):
            vidx.append(j)
            views.append(v)
    dense = []  # (owner (V,), boxes (V,A,4), keypoints (V,A,7,2), scores (V,A)) per detector pass, in image px
    if (config.boost_flip or mode == "search") and view_for:
        fi = torch.tensor(view_for)
        dense.append((fi,) + palm_candidates(fi, lb_rois[fi], True))
    if views:
        vi = torch.tensor(vidx)
        dense.append((vi,) + palm_candidates(vi, torch.tensor(views, dtype=torch.float64)))
    out = []
    for owner, *arrays in dense:
        b, k, s = (to_host(t) for t in arrays)
        out += [_selected(j, b[v], k[v], s[v], config.boost_min_score) for v, j in enumerate(owner.tolist())]
    return out


def _image_candidates(j: int, cands: list[ViewCandidates], base: PalmRois, base_palms: torch.Tensor,
                      config: FoundationConfig, max_hands: int) -> PalmRois:
    """Image j's palm ROIs: MediaPipe's (`base`), then the boosted candidates that are not its palms again."""
    mine = [c for c in cands if c[0] == j]
    boxes, kps, scores = weighted_nms_arrays(*(np.concatenate([c[i] for c in mine]) for i in (1, 2, 3)),
                                             config.nms_iou, 2 * max_hands)
    r0, s0_, f0 = base
    if r0.shape[0] and len(scores):  # drop candidates that are MediaPipe's own palms again
        new = ~(box_iou(boxes, to_host(base_palms).astype(boxes.dtype)) > config.association_iou).any(1)
        boxes, kps, scores = boxes[new], kps[new], scores[new]
    if not len(scores):
        return base
    rois = roi_from_palm(boxes.astype(np.float64), kps.astype(np.float64))
    # every remaining candidate goes to the landmark net: one may repeat a kept hand (dropped by
    # dedup_hands), so the next can still fill the slot; dedup_hands also caps the hands at max_hands
    return (torch.cat([r0, torch.as_tensor(rois, device=r0.device)]),
            torch.cat([s0_, torch.as_tensor(scores, device=s0_.device)]),
            torch.cat([f0, torch.ones(len(scores), dtype=torch.bool, device=f0.device)]))


def add_recall_candidates(base: list[PalmRois], base_palms: list[torch.Tensor],
                          letterbox: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                          lb_rois: torch.Tensor, sizes: torch.Tensor, max_hands: int, config: FoundationConfig,
                          mode: str, palm_candidates: PalmCandidates) -> list[PalmRois]:
    """Append recall-boost palm ROIs (is_boost True) after MediaPipe's own, per image of the batch.

    base: MediaPipe's (rois, scores, is_boost) per image; base_palms: its palm boxes (k,4) px per image;
    letterbox: the letterbox pass's decoded anchors per image (boxes (m,4), keypoints (m,7,2), scores (m,)),
    normalised, in anchor order, at least those down to boost_min_score (`palm.decode_above`); lb_rois (b,5) the
    letterbox views; sizes (b,2) W,H; mode: one of RECALL_MODES but "off";
    palm_candidates(image_index, views, flip=False): the palm detector on square views of those images.
    """
    # boosted hands only fill slots MediaPipe left free: images already holding max_hands need no extra pass
    need = [j for j in range(len(base)) if base[j][0].shape[0] < max_hands]
    if not need:
        return base
    # "fast": extra views only where MediaPipe found nothing (measured on the real sets, the zoomed-out
    # view never added a hand next to one MediaPipe found; tiles did once, on a 1280x720 image)
    view_for = [j for j in need if mode != "fast" or base[j][0].shape[0] == 0]
    cands = _letterbox_candidates(letterbox, lb_rois, need, config.boost_min_score)
    cands += _view_candidates(sizes, view_for, lb_rois, config, mode, palm_candidates)
    needed = set(need)
    return [_image_candidates(j, cands, base[j], base_palms[j], config, max_hands) if j in needed else base[j]
            for j in range(len(base))]


def confirm_recall(out: FoundationOutput, config: FoundationConfig, max_hands: int) -> FoundationOutput:
    """Keep boosted hands the landmark net confirms (presence >= boost_min_presence, which becomes their
    score: their palm score is low by construction) and that repeat no kept hand; cap max_hands per image."""
    image_index = to_host(out.image_index)  # the check on the host: a few hands, numpy's ops cost less
    if not to_host(out.boosted).any() and (len(image_index) < 2 or np.bincount(image_index).max() <= 1):
        return out  # one MediaPipe hand per image at most: nothing to confirm, repeat or cap
    out = out.select(~out.boosted | (out.presence >= config.boost_min_presence))
    out.score = torch.where(out.boosted, out.presence, out.score)
    return dedup_hands(out, config, max_hands)


def dedup_hands(out: FoundationOutput, config: FoundationConfig, max_hands: int) -> FoundationOutput:
    """Drop boosted hands whose joints repeat a kept hand of the same image; cap max_hands per image.

    Two hands are the same when their mean joint distance is under `dedup_dist` x the longer side of
    the earlier hand's box (interacting hands overlap in boxes but not in joints). A boosted hand is also
    dropped when its box overlaps a kept hand of the same handedness (IoU > `dedup_iou`: a second view of
    one hand), or its side is under `dedup_min_size` x the largest kept hand's (the landmark net seeing a
    hand in a few fingers); on the real sets these were the search views' only false positives.
    """
    keep = torch.zeros(len(out), dtype=torch.bool)
    j = out.joints_2d.cpu()
    side = (out.box[:, 2:] - out.box[:, :2]).amax(-1).cpu()
    img = out.image_index.cpu()
    box, boosted, right = out.box.cpu(), out.boosted.cpu(), out.handedness_right.cpu() > 0.5
    count: dict[int, int] = {}
    # MediaPipe's own hands first (kept as they are), then boosted ones by presence
    rank = out.presence.cpu() - 2.0 * out.boosted.cpu().float()
    for a in torch.argsort(rank, descending=True, stable=True).tolist():
        i = int(img[a])
        prev = torch.nonzero(keep & (img == i)).flatten()
        if prev.numel():
            d = torch.linalg.norm(j[prev] - j[a], dim=-1).mean(-1)  # (p,)
            if bool((d < config.dedup_dist * side[prev]).any()):
                continue
            if boosted[a]:
                same_side = right[prev] == right[a]
                overlap = box_iou(box[a:a + 1], box[prev])[0] > config.dedup_iou
                if bool((same_side & overlap).any()) or side[a] < config.dedup_min_size * side[prev].max():
                    continue
        if count.get(i, 0) >= max_hands:
            continue
        keep[a] = True
        count[i] = count.get(i, 0) + 1
    return out.select(torch.nonzero(keep).flatten().to(out.image_index.device))
