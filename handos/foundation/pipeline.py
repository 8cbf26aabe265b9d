"""The frozen foundation: MediaPipe Hands' pipeline around the ported networks, batched, in torch.

Follows `HandLandmarkTrackingCpu` of `mediapipe==0.10.21` (model_complexity 1):
letterbox to 192x192 (zero border, [0,1]) -> palm detector -> decode 2016 SSD anchors (box + 7 keypoints)
-> sigmoid scores >= `min_detection_score` -> weighted NMS (IoU 0.3) -> first `max_hands` -> remove
letterbox -> palm ROI (rotation wrist -> middle base, scale 2.6, shift_y -0.5, square) -> association
of ROIs (axis-aligned IoU > 0.5: the later ROI replaces the earlier; carried ROIs come after palm ROIs)
-> 224x224 crops (replicate border, [0,1]) -> landmark net -> presence >= `min_presence` -> landmarks
projected to image pixels. On video, ROIs carried from the previous frame (`roi_from_landmarks`) are
used and the detector runs only on images with fewer than `max_hands` carried ROIs.

With `FoundationConfig.recall_boost` ("fast" by default; "off" is exactly MediaPipe), palm candidates down
to `boost_min_score` are tried in the slots (`max_hands`) MediaPipe's own hands leave free, and extra
detector views (the letterbox zoomed out 1.5x for big hands, square tiles along the long side of elongated
images for small ones; "search": a multi-scale grid and a flipped pass) add candidates - in "fast" only on
images where MediaPipe's path found nothing, in "full"/"search" on every image with a free slot. Every extra
hand must be confirmed by the landmark net (presence >= `boost_min_presence`) and must not repeat a kept
hand (`_dedup`). MediaPipe's own hands are never changed by the booster. Measured with
tests/parity/foundation_metrics.py (found / hands, false positives, CPU ms per image, 2-core VM):
  set          off             fast            full            search
  ge2019       199/200 0 59ms  200/200 0 45ms  200/200 0 75ms  200/200 0 884ms
  interhand    1/6     0       2/6     0       2/6     0       4/6     0
  panoptic     3/4     0       4/4     0       4/4     0       4/4     0
  freihand     6/8     0       7/8     0       7/8     0       8/8     0
  onehand10k, rhd: all found in every mode, no false positives.

>>> fnd = Foundation.load("cpu")
>>> out = fnd.detect([rgb])                 # FoundationOutput, N hands over all images
>>> out.joints_2d[out.per_image(0)]         # (n0, 21, 2) px
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

import numpy as np
import torch

from handos.errors import ConfigError, InputError
from handos.foundation import RECALL_MODES
from handos.foundation.anchors import palm_anchors
from handos.foundation.palm import (PALM_OPTIONS, PalmDetections, decode_detections, letterbox_rois,
                                    remove_letterbox, weighted_nms)
from handos.foundation.roi import (axis_aligned_iou, box_iou, crop_affine, crop_images, crop_images_cv2,
                                   project_landmarks, project_world, roi_from_landmarks, roi_from_palm)

__all__ = ["FoundationConfig", "FoundationOutput", "Foundation", "roi_from_landmarks"]

PALM_SIZE = 192
SEARCH_SCALES = (1.5, 1.0, 0.6, 0.36)  # "search" views: square side / image long side
LANDMARK_SIZE = 224


@dataclass
class FoundationConfig:
    """Thresholds and options of the foundation (defaults = MediaPipe Hands, static images, + recall booster).

    max_hands: hands kept per image (MediaPipe `max_num_hands`).
    min_detection_score: palm score threshold (MediaPipe `min_detection_confidence`).
    min_presence: landmark-net presence threshold (MediaPipe `min_tracking_confidence`).
    nms_iou: weighted-NMS IoU threshold of palm boxes (graph: 0.3).
    association_iou: ROIs with axis-aligned IoU above this are one hand (graph: 0.5).
    box_pad: `box` = tight box of the 21 landmarks grown by this fraction of its longer side per edge.
    exact_resampling: sample crops as OpenCV does (1/32-px positions, uint8 rounding), for parity.
    batch_size: max crops per network call; None = 8 on CPU (larger batches fall out of cache and are
        slower there), 64 on other devices.
    recall_boost: how hard to look beyond MediaPipe's own path (see RECALL_MODES):
        "off" (or False): exactly MediaPipe Hands;
        "fast" (default): MediaPipe's letterbox candidates down to `boost_min_score` fill free slots, and
            the extra views below run only on images where MediaPipe's path found no hand at all;
        "full" (or True): the extra views run on every image with a free slot;
        "search": a multi-scale grid of views (+ flipped) on every image with a free slot (slow: for
            pre-labeling, where a missed hand costs more than CPU time).
    boost_zoom_out: extra view: the letterbox zoomed out by this factor (big hands).
    boost_tile_aspect: extra views: square tiles along the long side of images at least this elongated
        (ceil(long/short) + 1 tiles; smaller hands).
    boost_flip: also detect on the horizontally flipped letterbox (always on in "search").
    boost_min_score: with recall_boost, palm candidates down to this score are tried ...
    boost_min_presence: ... and kept only if the landmark net's presence reaches this.
    dedup_dist: with recall_boost, a hand whose mean joint distance to an earlier hand is under this
        fraction of that hand's box side is a duplicate and dropped.
    dedup_iou, dedup_min_size: with recall_boost, a boosted hand overlapping a kept hand of the same
        handedness by more than this box IoU, or smaller than this fraction of the largest kept hand, is dropped.
    """

    max_hands: int = 2
    min_detection_score: float = 0.5
    min_presence: float = 0.5
    nms_iou: float = 0.3
    association_iou: float = 0.5
    box_pad: float = 0.05
    exact_resampling: bool = True
    batch_size: int | None = None
    recall_boost: str = "fast"
    boost_zoom_out: float = 1.5
    boost_tile_aspect: float = 1.25
    boost_flip: bool = False
    boost_min_score: float = 0.3
    boost_min_presence: float = 0.9
    dedup_dist: float = 0.2
    dedup_iou: float = 0.2
    dedup_min_size: float = 0.3

    @property
    def recall_mode(self) -> str:
        """`recall_boost` as one of RECALL_MODES (True -> "full", False -> "off", also when set after creation)."""
        mode = self.recall_boost
        if isinstance(mode, bool):
            mode = "full" if mode else "off"
        if mode not in RECALL_MODES:
            raise ConfigError(f"recall_boost must be one of {', '.join(RECALL_MODES)}, got {mode!r}")
        return mode

    def __post_init__(self) -> None:
        """Validate ranges (ConfigError with a one-line message); booleans for recall_boost map to off/full."""
        self.recall_boost = self.recall_mode
        if self.max_hands < 1:
            raise ConfigError(f"max_hands must be >= 1, got {self.max_hands}")
        for name in ("min_detection_score", "min_presence", "nms_iou", "association_iou",
                     "boost_min_score", "boost_min_presence", "dedup_dist", "dedup_iou", "dedup_min_size"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class FoundationOutput:
    """Per-hand tensors over all images of one `detect` call (N hands), on the model's device.

    image_index (N,) long; score (N,) palm score (presence for hands from carried ROIs);
    box (N,4) xyxy px (tight landmark box, padded by `box_pad`); roi (N,5) [cx,cy,w,h,rot] px (the crop);
    joints_2d (N,21,2) px; joints_z (N,21) relative depth in px (MediaPipe's z x image width);
    presence (N,) prob; mp_handedness (N,) prob of MediaPipe's label "Right" (MediaPipe assumes mirrored
    selfie images: its "Right" is a LEFT hand on a normal photo); handedness_right (N,) prob that the hand
    is a right hand on a normal, unmirrored photo (= 1 - mp_handedness); world (N,21,3) m (MediaPipe's
    world landmarks, rotated by the ROI); features (N,C) pooled landmark-net features; feature_map
    (N,C,7,7) or None; crop_affine (N,2,3) image px -> crop px (224 crop); roi_index (N,) long index into
    the carried `rois[image]` the hand came from, -1 for a fresh detection; next_roi (N,5) ROI for the
    next frame (`roi_from_landmarks`); image_sizes (B,2) [W,H]; boosted (N,) bool: found only by the
    recall booster (MediaPipe's own path did not give this hand).
    """

    image_index: torch.Tensor
    score: torch.Tensor
    box: torch.Tensor
    roi: torch.Tensor
    joints_2d: torch.Tensor
    joints_z: torch.Tensor
    presence: torch.Tensor
    mp_handedness: torch.Tensor
    handedness_right: torch.Tensor
    world: torch.Tensor
    features: torch.Tensor
    crop_affine: torch.Tensor
    roi_index: torch.Tensor
    next_roi: torch.Tensor
    image_sizes: torch.Tensor
    feature_map: torch.Tensor | None = None
    boosted: torch.Tensor | None = None

    def __len__(self) -> int:
        """Number of hands N."""
        return int(self.image_index.shape[0])

    @property
    def num_images(self) -> int:
        """Number of input images B."""
        return int(self.image_sizes.shape[0])

    def per_image(self, i: int) -> torch.Tensor:
        """Indices (n_i,) of the hands of image i."""
        return torch.nonzero(self.image_index == i).flatten()

    def select(self, idx: torch.Tensor) -> "FoundationOutput":
        """The hands `idx` (indices or bool mask) as a new output (image_sizes kept)."""
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v if (f.name == "image_sizes" or v is None) else v[idx]
        return FoundationOutput(**kw)

    def to(self, device: torch.device | str) -> "FoundationOutput":
        """All tensors moved to `device`."""
        return FoundationOutput(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                                   for f in fields(self)})


class _Images:
    """Input images grouped by size as (b,3,H,W) float tensors in 0..255 on one device."""

    def __init__(self, images: list[np.ndarray], device: torch.device):
        self.arrays = images if device.type == "cpu" else None  # OpenCV crops on the CPU
        self.sizes = torch.tensor([[im.shape[1], im.shape[0]] for im in images], dtype=torch.long)  # (B,2) W,H
        self.groups: dict[tuple[int, int], tuple[list[int], torch.Tensor]] = {}
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault((im.shape[0], im.shape[1]), []).append(i)
        self.where = torch.zeros(len(images), dtype=torch.long)  # position inside its group
        self.key: list[tuple[int, int]] = [None] * len(images)  # type: ignore[list-item]
        for k, idx in by_size.items():
            arr = torch.from_numpy(np.stack([images[i] for i in idx]))  # (b,H,W,3) uint8
            t = arr.to(device).permute(0, 3, 1, 2).to(torch.float32)
            self.groups[k] = (idx, t)
            for j, i in enumerate(idx):
                self.where[i] = j
                self.key[i] = k

    def crop(self, image_index: torch.Tensor, rois: torch.Tensor, size: int, border: str,
             exact: bool) -> torch.Tensor:
        """Crops (N,3,size,size) in 0..255 of ROIs (N,5) px on images image_index (N,)."""
        if exact and self.arrays is not None and os.environ.get("HANDOS_CV2_CROPS", "1") != "0":
            return crop_images_cv2(self.arrays, image_index, rois, size, border)
        n = rois.shape[0]
        dev = next(iter(self.groups.values()))[1].device
        out = torch.zeros((n, 3, size, size), dtype=torch.float32, device=dev)
        ii = image_index.cpu()
        for k, (idx, t) in self.groups.items():
            sel = torch.nonzero(torch.isin(ii, torch.tensor(idx))).flatten()
            if sel.numel() == 0:
                continue
            local = self.where[ii[sel]].to(dev)
            out[sel.to(dev)] = crop_images(t, local, rois[sel.to(rois.device)].to(dev), size, border, exact)
        return out


def _check_images(images) -> list[np.ndarray]:
    """Validate a list of (H,W,3) uint8 RGB arrays (InputError otherwise)."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise InputError("detect() takes a list of images; wrap a single (H,W,3) array in a list")
    out = []
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            desc = f"{type(im).__name__} {getattr(im, 'shape', '')} {getattr(im, 'dtype', '')}".strip()
            raise InputError(f"image {i} must be an (H,W,3) uint8 RGB numpy array, got {desc}; "
                             "use handos.io.load_image to read files")
        if im.shape[0] < 2 or im.shape[1] < 2:
            raise InputError(f"image {i} is too small ({im.shape[1]}x{im.shape[0]} px)")
        out.append(np.ascontiguousarray(im))
    return out


class Foundation:
    """MediaPipe Hands (palm detector + landmark net) as one batched torch pipeline."""

    def __init__(self, palm_net, landmark_net, config: FoundationConfig | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.palm_net = palm_net
        self.landmark_net = landmark_net
        self.config = config or FoundationConfig()
        self.device = torch.device(device)
        self.dtype = dtype
        self.anchors = palm_anchors(self.device, torch.float32)  # (2016,4)
        self.feature_dim = int(getattr(landmark_net, "feature_dim", 1152))

    @classmethod
    def load(cls, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
             config: FoundationConfig | None = None) -> "Foundation":
        """The foundation with the shipped (converted MediaPipe) weights on `device`/`dtype`."""
        from handos.foundation.nets import load_landmark_net, load_palm_detector

        device = torch.device(device)
        return cls(load_palm_detector(device, dtype), load_landmark_net(device, dtype), config, device, dtype)

    def _batch_size(self) -> int:
        """Crops per network call (config.batch_size, or 8 on CPU / 64 elsewhere)."""
        if self.config.batch_size is not None:
            return int(self.config.batch_size)
        return 8 if self.device.type == "cpu" else 64

    # ------------------------------------------------------------------ palm detection
    def _run_palm(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Palm net on letterboxed inputs (B,3,192,192) in [0,1], batched."""
        regs, logits = [], []
        bs = self._batch_size()
        for s in range(0, x.shape[0], bs):
            r, l = self.palm_net(x[s:s + bs].to(self.dtype))
            regs.append(r.float())
            logits.append(l.float())
        return torch.cat(regs), torch.cat(logits)

    def _palm_candidates(self, imgs: _Images, idx: torch.Tensor, views: torch.Tensor, flip: bool = False):
        """Decoded palm candidates of square views (V,5) px of images idx (V,): boxes/keypoints in image px."""
        x = imgs.crop(idx, views.to(self.device), PALM_SIZE, "zero", self.config.exact_resampling) / 255.0
        regs, logits = self._run_palm(x.flip(-1) if flip else x)
        boxes, kps, scores = decode_detections(regs, logits, self.anchors, PALM_OPTIONS)  # (V,A,...) normalised
        if flip:
            boxes = torch.stack([1 - boxes[..., 2], boxes[..., 1], 1 - boxes[..., 0], boxes[..., 3]], -1)
            kps = torch.stack([1 - kps[..., 0], kps[..., 1]], -1)
        v = views.to(boxes.device, torch.float32)
        side, org = v[:, 2, None, None], (v[:, :2] - v[:, 2:4] / 2)[:, None]  # axis-aligned square views
        boxes = boxes * side + org.repeat(1, 1, 2)
        kps = kps * side[..., None] + org[:, :, None]
        return boxes, kps, scores

    def detect_palms(self, imgs: _Images, which: list[int], max_hands: int,
                     boost: str = "off") -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Palm ROIs per image in `which`: list of (rois (k,5) px, scores (k,), is_boost (k,) bool).

        MediaPipe's path: letterbox, threshold, weighted NMS, first `max_hands`, letterbox removal, ROI.
        With `boost`, extra candidates (see FoundationConfig) follow MediaPipe's, flagged is_boost.
        """
        if not which:
            return []
        cfg = self.config
        idx = torch.tensor(which, dtype=torch.long)
        sizes = imgs.sizes[idx]
        lb_rois, pads = letterbox_rois(sizes, PALM_SIZE)  # (b,5), (b,4)
        x = imgs.crop(idx, lb_rois.to(self.device), PALM_SIZE, "zero", cfg.exact_resampling) / 255.0
        regs, logits = self._run_palm(x)
        boxes, kps, scores = decode_detections(regs, logits, self.anchors, PALM_OPTIONS)  # (b,A,..)
        out, palm_px = [], []
        for j in range(len(which)):
            keep = scores[j] >= cfg.min_detection_score
            det = weighted_nms(boxes[j][keep], kps[j][keep], scores[j][keep], cfg.nms_iou, max_hands)
            det = remove_letterbox(det, pads[j].to(det.boxes.device))
            wh = sizes[j].to(det.boxes)  # (2,) W,H
            rois = roi_from_palm((det.boxes * wh.repeat(2)).double(), (det.keypoints * wh).double())
            out.append((rois, det.scores, torch.zeros(len(det), dtype=torch.bool)))
            palm_px.append(det.boxes * wh.repeat(2))
        if boost != "off":
            out = self._boost_palms(imgs, which, max_hands, out, palm_px, (boxes, kps, scores), lb_rois, boost)
        return out

    def _boost_views(self, size: tuple[int, int], mode: str = "full") -> list[list[float]]:
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
        if self.config.boost_zoom_out > 1:
            z = side * self.config.boost_zoom_out
            views.append([W / 2, H / 2, z, z, 0.0])
        if side >= self.config.boost_tile_aspect * short:
            n = int(math.ceil(side / short)) + 1
            for t in range(n):
                c = short / 2 + t * (side - short) / (n - 1)
                views.append([c, H / 2, short, short, 0.0] if W > H else [W / 2, c, short, short, 0.0])
        return views

    def _boost_palms(self, imgs: _Images, which: list[int], max_hands: int, base: list, base_palms: list,
                     letterbox_raw, lb_rois: torch.Tensor, mode: str) -> list:
        """Append recall-boost palm ROIs (is_boost True) after MediaPipe's own per image (mode: RECALL_MODES)."""
        cfg = self.config
        # boosted hands only fill slots MediaPipe left free: images already holding max_hands need no extra pass
        need = [j for j in range(len(which)) if base[j][0].shape[0] < max_hands]
        if not need:
            return base
        # "fast": extra views only where MediaPipe found nothing (measured on the real sets, the zoomed-out
        # view never added a hand next to one MediaPipe found; tiles did once, on a 1280x720 image)
        view_for = [j for j in need if mode != "fast" or base[j][0].shape[0] == 0]
        sizes = imgs.sizes[torch.tensor(which)]
        vidx, views = [], []
        for j in view_for:
            for v in self._boost_views(tuple(sizes[j].tolist()), mode):
                vidx.append(j)
                views.append(v)
        # MediaPipe's letterbox pass, in image px
        b0, k0, s0 = letterbox_raw
        v0 = lb_rois.to(b0.device, torch.float32)
        side0, org0 = v0[:, 2, None, None], (v0[:, :2] - v0[:, 2:4] / 2)[:, None]
        cands = [(torch.arange(len(which)), b0 * side0 + org0.repeat(1, 1, 2), k0 * side0[..., None] + org0[:, :, None], s0)]
        if (cfg.boost_flip or mode == "search") and view_for:
            fi = torch.tensor(view_for)
            cands.append((fi,) + self._palm_candidates(imgs, torch.tensor(which)[fi], lb_rois[fi], True))
        if views:
            vi = torch.tensor(vidx)
            cands.append((vi,) + self._palm_candidates(imgs, torch.tensor(which)[vi], torch.tensor(views, dtype=torch.float64)))
        out = []
        for j in range(len(which)):
            if base[j][0].shape[0] >= max_hands:
                out.append(base[j])
                continue
            bs, ks, ss = [], [], []
            for owner, b, k, s in cands:
                for v in torch.nonzero(owner == j).flatten().tolist():
                    m = s[v] >= cfg.boost_min_score
                    bs.append(b[v][m]); ks.append(k[v][m]); ss.append(s[v][m])
            det = weighted_nms(torch.cat(bs), torch.cat(ks), torch.cat(ss), cfg.nms_iou, 2 * max_hands)
            rois = roi_from_palm(det.boxes.double(), det.keypoints.double())
            r0, s0_, f0 = base[j]
            if r0.shape[0] and rois.shape[0]:  # drop candidates that are MediaPipe's own palms again
                new = ~(box_iou(det.boxes, base_palms[j].to(det.boxes)) > cfg.association_iou).any(1)
                rois, det = rois[new], PalmDetections(det.boxes[new], det.keypoints[new], det.scores[new])
            # every remaining candidate goes to the landmark net: one may repeat a kept hand (dropped by
            # _dedup), so the next can still fill the slot; _dedup also caps the hands at max_hands
            out.append((torch.cat([r0, rois]), torch.cat([s0_, det.scores]),
                        torch.cat([f0, torch.ones(len(det), dtype=torch.bool)])))
        return out

    # ------------------------------------------------------------------ landmarks
    def _run_landmarks(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Landmark net on crops (N,3,224,224) in [0,1], batched; outputs float32."""
        outs: list[dict[str, torch.Tensor]] = []
        bs = self._batch_size()
        for s in range(0, x.shape[0], bs):
            o = self.landmark_net(x[s:s + bs].to(self.dtype))
            outs.append({k: v.float() for k, v in o.items() if torch.is_tensor(v)})
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    @torch.no_grad()
    def detect(self, images: list[np.ndarray], rois: list | None = None,
               max_hands: int | None = None) -> FoundationOutput:
        """Hands in a batch of (H,W,3) uint8 RGB images; `rois[i]` (k,5) px carried from the last frame.

        images: list of B arrays (sizes may differ; same-size images are cropped in one batch).
        rois: None (static images: palm detection everywhere) or one entry per image, None or (k,5)
            [cx, cy, w, h, rot] px (e.g. the previous frame's `next_roi`); the palm detector runs only
            on images with fewer than `max_hands` carried ROIs, and a detected ROI that overlaps a carried
            one is replaced by it (MediaPipe's tracking). Hands below `min_presence` are dropped (lost).
        max_hands: hands per image (default `config.max_hands`).
        Returns a FoundationOutput over all images (hands ordered by image, then MediaPipe's ROI order).
        """
        cfg = self.config
        mh = cfg.max_hands if max_hands is None else int(max_hands)
        if mh < 1:
            raise InputError(f"max_hands must be >= 1, got {mh}")
        imgs_np = _check_images(images)
        B = len(imgs_np)
        carried = self._check_rois(rois, B)
        if B == 0:
            return self._empty(torch.zeros((0, 2), dtype=torch.long))
        imgs = _Images(imgs_np, self.device)
        which = [i for i in range(B) if carried[i].shape[0] < mh]
        boost = cfg.recall_mode
        palms = dict(zip(which, self.detect_palms(imgs, which, mh, boost)))

        # Association (AssociationNormRectCalculator): palm ROIs, then carried ROIs; an ROI overlapping an
        # earlier one (axis-aligned IoU > association_iou) replaces it.
        all_rois, img_idx, src_score, roi_index, is_boost = [], [], [], [], []
        for i in range(B):
            cand = []
            if i in palms:
                pr, ps, pb = palms[i]
                pr = pr.cpu()
                cand += [(pr[k], float(ps[k]), -1, bool(pb[k])) for k in range(pr.shape[0])]
            cand += [(carried[i][k], float("nan"), k, False) for k in range(carried[i].shape[0])]
            kept: list[tuple] = []
            for c in cand:
                if kept and not c[3]:  # recall-boost candidates never replace others (dedup handles them)
                    iou = axis_aligned_iou(c[0][None].double(), torch.stack([k[0] for k in kept]).double())[0]
                    kept = [k for k, v in zip(kept, iou.tolist()) if not v > cfg.association_iou]
                kept.append(c)
            for r, s, ri, bb in kept:
                all_rois.append(r.double().to(self.device))
                img_idx.append(i)
                src_score.append(s)
                roi_index.append(ri)
                is_boost.append(bb)
        if not all_rois:
            return self._empty(imgs.sizes)
        rois_t = torch.stack(all_rois)  # (M,5) float64
        img_t = torch.tensor(img_idx, dtype=torch.long)
        crops = imgs.crop(img_t, rois_t, LANDMARK_SIZE, "replicate", cfg.exact_resampling) / 255.0
        lm = self._run_landmarks(crops)
        presence = lm["presence"]
        boost_t = torch.tensor(is_boost, device=presence.device)
        keep = presence >= cfg.min_presence
        keep = keep & (~boost_t | (presence >= cfg.boost_min_presence))
        rois_f = rois_t.float()
        joints, z = project_landmarks(lm["landmarks"], rois_f.to(lm["landmarks"].device), LANDMARK_SIZE)
        score = torch.tensor(src_score, dtype=torch.float32, device=presence.device)
        score = torch.where(torch.isnan(score), presence, score)
        # a boosted hand's palm score is low by construction (>= boost_min_score); it was confirmed by the
        # landmark net (presence >= boost_min_presence), so that confirmation is its score
        score = torch.where(boost_t, presence, score)
        lo, hi = joints.amin(1), joints.amax(1)  # (M,2)
        pad = (hi - lo).amax(-1, keepdim=True) * cfg.box_pad
        box = torch.cat([lo - pad, hi + pad], -1)
        dev = self.device
        out = FoundationOutput(
            image_index=img_t.to(dev), score=score.to(dev), box=box.to(dev), roi=rois_f.to(dev),
            joints_2d=joints.to(dev), joints_z=z.to(dev), presence=presence.to(dev),
            mp_handedness=(1 - lm["handedness"]).to(dev), handedness_right=lm["handedness"].to(dev),
            world=project_world(lm["world"], rois_f[:, 4].to(lm["world"].device)).to(dev),
            features=lm["features"].to(dev), crop_affine=crop_affine(rois_t, LANDMARK_SIZE).float().to(dev),
            roi_index=torch.tensor(roi_index, dtype=torch.long, device=dev),
            next_roi=roi_from_landmarks(joints.double()).float().to(dev),
            image_sizes=imgs.sizes.to(dev), feature_map=lm.get("feature_map"), boosted=boost_t.to(dev),
        )
        out = out.select(keep.to(dev))
        if boost != "off":
            out = self._dedup(out, mh)
        return out

    def _dedup(self, out: FoundationOutput, max_hands: int) -> FoundationOutput:
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
                if bool((d < self.config.dedup_dist * side[prev]).any()):
                    continue
                if boosted[a]:
                    same_side = right[prev] == right[a]
                    overlap = box_iou(box[a:a + 1], box[prev])[0] > self.config.dedup_iou
                    if bool((same_side & overlap).any()) or side[a] < self.config.dedup_min_size * side[prev].max():
                        continue
            if count.get(i, 0) >= max_hands:
                continue
            keep[a] = True
            count[i] = count.get(i, 0) + 1
        return out.select(torch.nonzero(keep).flatten().to(out.image_index.device))

    def _check_rois(self, rois, B: int) -> list[torch.Tensor]:
        """Carried ROIs as a list of (k,5) float64 CPU tensors (empty where None)."""
        if rois is None:
            return [torch.zeros((0, 5), dtype=torch.float64) for _ in range(B)]
        if len(rois) != B:
            raise InputError(f"rois has {len(rois)} entries for {B} images; give one (k,5) array or None per image")
        out = []
        for i, r in enumerate(rois):
            if r is None:
                out.append(torch.zeros((0, 5), dtype=torch.float64))
                continue
            t = torch.as_tensor(r).detach().to("cpu", torch.float64).reshape(-1, 5) if np.size(r) or torch.is_tensor(r) \
                else torch.zeros((0, 5), dtype=torch.float64)
            if t.numel() and (not torch.isfinite(t).all() or (t[:, 2:4] <= 0).any()):
                raise InputError(f"rois[{i}] must be finite [cx, cy, w, h, rotation] rows with w, h > 0")
            out.append(t)
        return out

    def _empty(self, sizes: torch.Tensor) -> FoundationOutput:
        """An output with no hands."""
        d = self.device
        z = lambda *s: torch.zeros(s, dtype=torch.float32, device=d)  # noqa: E731
        return FoundationOutput(
            image_index=torch.zeros(0, dtype=torch.long, device=d), score=z(0), box=z(0, 4), roi=z(0, 5),
            joints_2d=z(0, 21, 2), joints_z=z(0, 21), presence=z(0), mp_handedness=z(0), handedness_right=z(0),
            world=z(0, 21, 3), features=z(0, self.feature_dim), crop_affine=z(0, 2, 3),
            roi_index=torch.zeros(0, dtype=torch.long, device=d), next_roi=z(0, 5), image_sizes=sizes.to(d),
            feature_map=None, boosted=torch.zeros(0, dtype=torch.bool, device=d))
