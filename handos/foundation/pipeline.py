"""The frozen foundation: MediaPipe Hands' pipeline around the ported networks, batched, in torch.

Follows `HandLandmarkTrackingCpu` of `mediapipe==0.10.21` (model_complexity 1):
letterbox to 192x192 (zero border, [0,1]) -> palm detector -> decode 2016 SSD anchors (box + 7 keypoints)
-> sigmoid scores >= `min_detection_score` -> weighted NMS (IoU 0.3) -> first `max_hands` -> remove
letterbox -> palm ROI (rotation wrist -> middle base, scale 2.6, shift_y -0.5, square) -> association
of ROIs (axis-aligned IoU > 0.5: the later ROI replaces the earlier; carried ROIs come after palm ROIs)
-> 224x224 crops (replicate border, [0,1]) -> landmark net -> presence >= `min_presence` -> landmarks
projected to image pixels. On video, ROIs carried from the previous frame (`roi_from_landmarks`) are
used and the detector runs only on images with fewer than `max_hands` carried ROIs.

With `FoundationConfig.recall_boost` ("fast" by default; "off" is exactly MediaPipe), the recall booster
(`handos.foundation.recall`) adds palm candidates after MediaPipe's own and confirms them after the landmark
net; MediaPipe's own hands are never changed by it (modes and measurements: see that module).

>>> fnd = Foundation.load("cpu")
>>> out = fnd.detect([rgb])                 # FoundationOutput, N hands over all images
>>> out.joints_2d[out.per_image(0)]         # (n0, 21, 2) px
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handos.errors import InputError
from handos.foundation.anchors import palm_anchors
from handos.foundation.palm import (
    PALM_OPTIONS,
    PalmDetections,
    decode_above,
    decode_detections,
    decode_tables,
    host_tables,
    letterbox_rois,
    palm_scores,
    remove_letterbox,
    weighted_nms_arrays,
)
from handos.foundation.recall import add_recall_candidates, confirm_recall
from handos.foundation.roi import (
    axis_aligned_iou,
    crop_affine,
    crop_images,
    crop_images_cv2,
    crop_images_cv2_uint8,
    project_landmarks,
    project_world,
    roi_from_box,
    roi_from_landmarks,
    roi_from_palm,
)
from handos.foundation.types import FoundationConfig, FoundationOutput
from handos.geometry import to_host

__all__ = ["FoundationConfig", "FoundationOutput", "Foundation", "roi_from_landmarks", "check_boxes"]

PALM_SIZE = 192
LANDMARK_SIZE = 224


class _Images:
    """Input images grouped by size as (b,3,H,W) float tensors in 0..255 on one device."""

    def __init__(self, images: list[np.ndarray], device: torch.device):
        self.arrays = images if device.type == "cpu" else None  # OpenCV crops on the CPU
        self.images = images
        self.device = device
        self.wh = np.array([[im.shape[1], im.shape[0]] for im in images], dtype=np.int64).reshape(-1, 2)  # (B,2) W,H
        self.sizes = torch.from_numpy(self.wh)  # the same as a tensor
        self.by_size: dict[tuple[int, int], list[int]] = {}  # (H,W) -> image indices
        for i, im in enumerate(images):
            self.by_size.setdefault((im.shape[0], im.shape[1]), []).append(i)
        self._groups: dict[tuple[int, int], tuple[list[int], torch.Tensor]] | None = None

    @functools.cached_property
    def where(self) -> torch.Tensor:
        """(B,) each image's position inside its size group (the torch crops' index into `groups`)."""
        where = torch.zeros(len(self.images), dtype=torch.long)
        for idx in self.by_size.values():
            where[idx] = torch.arange(len(idx))
        return where

    @property
    def groups(self) -> dict[tuple[int, int], tuple[list[int], torch.Tensor]]:
        """Same-size images as (indices, (b,3,H,W) float tensor), built on first use (the OpenCV crops on the CPU
        never need them: converting a 640x480 frame to float costs ~1 ms)."""
        if self._groups is None:
            self._groups = {}
            for k, idx in self.by_size.items():
                arr = torch.from_numpy(np.stack([self.images[i] for i in idx]))  # (b,H,W,3) uint8
                self._groups[k] = (idx, arr.to(self.device).permute(0, 3, 1, 2).to(torch.float32))
        return self._groups

    def cv2_crops(self, exact: bool) -> bool:
        """Whether crops are OpenCV's on the host arrays (exact resampling on the CPU, $HANDOS_CV2_CROPS not 0)."""
        return exact and self.arrays is not None and os.environ.get("HANDOS_CV2_CROPS", "1") != "0"

    def crop(self, image_index: torch.Tensor, rois: torch.Tensor, size: int, border: str,
             exact: bool) -> torch.Tensor:
        """Crops (N,3,size,size) in 0..255 of ROIs (N,5) px on images image_index (N,)."""
        if self.cv2_crops(exact):
            return crop_images_cv2(self.arrays, image_index, rois, size, border)
        n = rois.shape[0]
        dev = next(iter(self.groups.values()))[1].device
        out = torch.zeros((n, 3, size, size), dtype=torch.float32, device=dev)
        ii = image_index.cpu()
        for idx, t in self.groups.values():
            sel = torch.nonzero(torch.isin(ii, torch.tensor(idx))).flatten()
            if sel.numel() == 0:
                continue
            local = self.where[ii[sel]].to(dev)
            out[sel.to(dev)] = crop_images(t, local, rois[sel.to(rois.device)].to(dev), size, border, exact)
        return out

    def net_input(self, net, image_index: torch.Tensor, rois: torch.Tensor, size: int, border: str,
                  exact: bool, maps: np.ndarray | None = None) -> torch.Tensor | np.ndarray:
        """A net's input for ROIs (N,5) on images image_index (N,): (N,size,size,3) uint8 OpenCV crops where the
        net takes them (LiteRT: scaled into its input buffer, no float copy), else (N,3,size,size) floats in [0,1].
        maps: the ROIs' `crop_affine` (N,2,3) float64 when the caller has them (the OpenCV crops use them)."""
        if getattr(net, "takes_uint8", False) and self.cv2_crops(exact):
            return crop_images_cv2_uint8(self.arrays, image_index, rois, size, border, maps)
        return self.crop(image_index, rois, size, border, exact) / 255.0


def _float(t: torch.Tensor) -> torch.Tensor:
    """t as float32 (a float32 tensor as it is, without a dispatched no-op)."""
    return t if t.dtype == torch.float32 else t.float()


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """t on device (None stays None; a tensor already there as it is, without a dispatched no-op)."""
    return t if t is None or t.device == device else t.to(device)


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


def check_boxes(boxes, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Hand boxes per image ((k,4) xyxy px, or None) as float64 CPU tensors; InputError for an unusable box.

    A box must be 4 finite numbers with x2 > x1, y2 > y1, at least partly inside its (W,H) image.
    """
    if boxes is None or isinstance(boxes, (str, bytes)) or len(boxes) != len(sizes):
        n = "no" if boxes is None else (len(boxes) if not isinstance(boxes, (str, bytes)) else "a string")
        raise InputError(f"boxes has {n} entries for {len(sizes)} images; give one list of [x1, y1, x2, y2] per image")
    out: list[torch.Tensor] = []
    for i, (b, (w, h)) in enumerate(zip(boxes, sizes)):
        if b is None:
            out.append(None)  # type: ignore[arg-type]
            continue
        try:
            t = torch.as_tensor(np.asarray(b, dtype=np.float64))
        except (TypeError, ValueError):
            raise InputError(f"boxes[{i}] must be a list of [x1, y1, x2, y2] boxes in pixels") from None
        if t.numel() == 0:
            out.append(torch.zeros((0, 4), dtype=torch.float64))
            continue
        if t.ndim != 2 or t.shape[1] != 4:
            raise InputError(f"boxes[{i}] must be a list of [x1, y1, x2, y2] boxes in pixels, got shape {tuple(t.shape)}")
        for k, (x1, y1, x2, y2) in enumerate(t.tolist()):
            if not all(np.isfinite([x1, y1, x2, y2])):
                raise InputError(f"boxes[{i}][{k}] has a non-finite coordinate: {[x1, y1, x2, y2]}")
            if not (x2 > x1 and y2 > y1):
                raise InputError(f"boxes[{i}][{k}] = {[x1, y1, x2, y2]} needs x2 > x1 and y2 > y1 ([x1, y1, x2, y2] px)")
            if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
                raise InputError(f"boxes[{i}][{k}] = {[x1, y1, x2, y2]} lies outside the {w}x{h} image")
        out.append(t)
    return out


@dataclass(frozen=True)
class RoiCandidate:
    """One ROI to run the landmark net on: roi (5,) px; palm score (NaN for a carried ROI); roi_index into the
    carried ROIs (-1 for a palm detection); boosted: a recall-booster candidate."""

    roi: torch.Tensor
    score: float
    roi_index: int
    boosted: bool


def associate_rois(palms: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, carried: torch.Tensor,
                   iou_threshold: float) -> list[RoiCandidate]:
    """One image's ROIs as MediaPipe's AssociationNormRectCalculator keeps them.

    Palm ROIs (rois, scores, is_boost) first, then carried ROIs (k,5); an ROI overlapping an earlier one
    (axis-aligned IoU > iou_threshold) replaces it; recall-boost candidates never replace others
    (`recall.confirm_recall` handles them).
    """
    cand = []
    if palms is not None:
        pr, ps, pb = (to_host(t) for t in palms)  # rows and scalars off host arrays: no op dispatched per ROI
        cand += [RoiCandidate(torch.from_numpy(pr[k]), float(ps[k]), -1, bool(pb[k])) for k in range(pr.shape[0])]
    cand += [RoiCandidate(carried[k], float("nan"), k, False) for k in range(carried.shape[0])]
    kept: list[RoiCandidate] = []
    for c in cand:
        if kept and not c.boosted:
            iou = axis_aligned_iou(c.roi[None].double(), torch.stack([k.roi for k in kept]).double())[0]
            kept = [k for k, v in zip(kept, iou.tolist()) if not v > iou_threshold]
        kept.append(c)
    return kept


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
        self.palm_decode = decode_tables(self.anchors, PALM_OPTIONS)  # per-anchor tables, built once
        # the same as numpy arrays, for the host-side decode of each image's kept anchors (`decode_above`)
        self.palm_decode_host = host_tables(self.palm_decode)
        self.feature_dim = int(getattr(landmark_net, "feature_dim", 1152))

    @classmethod
    def load(cls, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
             config: FoundationConfig | None = None, runtime: str = "torch", threads: int | None = None,
             palm_path: str | os.PathLike | None = None,
             landmark_path: str | os.PathLike | None = None) -> Foundation:
        """The foundation on `device`/`dtype`: shipped MediaPipe nets, or fine-tuned torch nets at `*_path`.

        runtime: "torch" (default here: the replayed graphs, any device, gradients possible), "litert"
        (the original .tflite graphs on LiteRT's XNNPACK, CPU, `threads` threads) or "auto" (see
        `handos.foundation.runtime`, which also says how fine-tuned nets are run).
        """
        from handos.foundation.runtime import load_nets

        device = torch.device(device)
        palm, landmark = load_nets(runtime, device, dtype, threads,
                                   None if palm_path is None else Path(palm_path),
                                   None if landmark_path is None else Path(landmark_path))
        return cls(palm, landmark, config, device, dtype)

    @property
    def runtimes(self) -> dict[str, str]:
        """The runtime of each net: {"palm": "torch" | "litert", "landmark": ...}."""
        return {"palm": getattr(self.palm_net, "runtime", "torch"),
                "landmark": getattr(self.landmark_net, "runtime", "torch")}

    @property
    def litert_only(self) -> bool:
        """Both nets on LiteRT: torch then only does small CPU work, kept on one thread (`torch_single_threaded`)."""
        return self.runtimes == {"palm": "litert", "landmark": "litert"}

    def _batch_size(self) -> int:
        """Crops per network call (config.batch_size, or 8 on CPU / 64 elsewhere)."""
        if self.config.batch_size is not None:
            return int(self.config.batch_size)
        return 8 if self.device.type == "cpu" else 64

    def _cast(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """A float input batch in the nets' dtype (uint8 crops for LiteRT pass as they are)."""
        return x if isinstance(x, np.ndarray) else x.to(self.dtype)

    # ------------------------------------------------------------------ palm detection
    def _run_palm(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Palm net on letterboxed inputs (B,3,192,192) in [0,1] (or `net_input`'s uint8 crops), batched."""
        regs, logits = [], []
        bs = self._batch_size()
        for s in range(0, x.shape[0], bs):
            reg, logit = self.palm_net(self._cast(x[s:s + bs]))
            regs.append(_float(reg))
            logits.append(_float(logit))
        if len(regs) == 1:
            return regs[0], logits[0]
        return torch.cat(regs), torch.cat(logits)

    def _palm_candidates(self, imgs: _Images, idx: torch.Tensor, views: torch.Tensor, flip: bool = False):
        """Decoded palm candidates of square views (V,5) px of images idx (V,): boxes/keypoints in image px."""
        x = imgs.net_input(self.palm_net, idx, views.to(self.device), PALM_SIZE, "zero", self.config.exact_resampling)
        if flip:  # mirror the views left-right (NHWC uint8 or NCHW float)
            x = np.ascontiguousarray(x[:, :, ::-1]) if isinstance(x, np.ndarray) else x.flip(-1)
        regs, logits = self._run_palm(x)
        boxes, kps, scores = decode_detections(regs, logits, self.palm_decode, PALM_OPTIONS)  # (V,A,...) normalised
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
        idx = torch.from_numpy(np.array(which, dtype=np.int64))
        wh = imgs.wh[which]  # (b,2) W,H
        lb_host, pads = letterbox_rois(wh, PALM_SIZE)  # (b,5), (b,4) float64 numpy
        lb_rois = torch.from_numpy(lb_host)
        x = imgs.net_input(self.palm_net, idx, lb_rois.to(self.device), PALM_SIZE, "zero", cfg.exact_resampling)
        regs, logits = self._run_palm(x)
        # per image on the host (numpy): decode the anchors above threshold, NMS, letterbox removal, ROI - a handful
        # of palms, data-dependent; the recall booster's letterbox candidates go down to its own threshold
        low = cfg.min_detection_score if boost == "off" else min(cfg.min_detection_score, cfg.boost_min_score)
        r_all, s_all = to_host(regs), to_host(palm_scores(logits, PALM_OPTIONS))  # (b,A,18), (b,A)
        candidates = [decode_above(r_all[j], s_all[j], self.palm_decode_host, low, PALM_OPTIONS) for j in range(len(which))]
        pads_h, wh_all = pads.astype(r_all.dtype), wh.astype(r_all.dtype)  # (b,4), (b,2) W,H
        out, palm_px = [], []
        for j, (b_j, k_j, s_j) in enumerate(candidates):
            keep = s_j >= cfg.min_detection_score
            det = PalmDetections(*weighted_nms_arrays(b_j[keep], k_j[keep], s_j[keep], cfg.nms_iou, max_hands))
            det = remove_letterbox(det, pads_h[j])
            box_px, kp_px = det.boxes * np.tile(wh_all[j], 2), det.keypoints * wh_all[j]
            rois = roi_from_palm(box_px.astype(np.float64), kp_px.astype(np.float64))
            out.append((torch.from_numpy(rois), torch.from_numpy(det.scores), torch.from_numpy(np.zeros(len(det), bool))))
            palm_px.append(torch.from_numpy(box_px))
        if boost != "off":
            def palm_candidates(pos: torch.Tensor, views: torch.Tensor, flip: bool = False):
                return self._palm_candidates(imgs, idx[pos], views, flip)

            out = add_recall_candidates(out, palm_px, candidates, lb_rois, torch.from_numpy(wh), max_hands, cfg, boost,
                                        palm_candidates)
        return out

    # ------------------------------------------------------------------ landmarks
    def _run_landmarks(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """Landmark net on crops (N,3,224,224) in [0,1] (or `net_input`'s uint8 crops), batched; outputs float32."""
        outs: list[dict[str, torch.Tensor]] = []
        bs = self._batch_size()
        for s in range(0, x.shape[0], bs):
            o = self.landmark_net(self._cast(x[s:s + bs]))
            outs.append({k: _float(v) for k, v in o.items() if torch.is_tensor(v)})
        if len(outs) == 1:
            return outs[0]
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
        from handos.foundation.runtime import torch_single_threaded

        with torch_single_threaded(self.litert_only):  # torch's threads would compete with XNNPACK's
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
            boost = cfg.recall_mode
            # letterbox -> palm detector -> decode, NMS -> palm ROIs (+ recall candidates), where too few are carried
            which = [i for i in range(B) if carried[i].shape[0] < mh]
            palms = dict(zip(which, self.detect_palms(imgs, which, mh, boost)))
            # ROI association: palm ROIs, then carried ROIs
            rois_in = [associate_rois(palms.get(i), carried[i], cfg.association_iou) for i in range(B)]
            if not any(rois_in):
                return self._empty(imgs.sizes)
            # landmark net on the ROI crops -> landmarks in image px; lost hands (presence) dropped
            out = self.landmarks_on_rois(imgs, rois_in)
            if cfg.landmark_passes:
                out = self.repeat_on_landmark_rois(imgs, rois_in, out, cfg.landmark_passes)
            kept = to_host(out.presence) >= cfg.min_presence
            if not kept.all():  # (select copies every field: skipped when all hands stay)
                out = out.select(torch.from_numpy(kept).to(self.device))
            if boost != "off":
                out = confirm_recall(out, cfg, mh)
            return out

    @torch.no_grad()
    def detect_boxes(self, images: list[np.ndarray], boxes: list, refine: int = 2) -> FoundationOutput:
        """Exactly one hand per given box, in order: the landmark net on each box's ROI, no palm detection.

        images: list of B (H,W,3) uint8 RGB arrays; boxes: one (k,4) [x1, y1, x2, y2] px per image (k may be 0).
        Each box gives an upright square ROI (`roi_from_box`); with `refine`, the landmark net runs again that
        many times on the ROI its own landmarks give (`next_roi`, rotation included) and the last pass is kept.
        No hand is dropped (presence is the score); `roi_index` is the box's index within its image.
        """
        from handos.foundation.runtime import torch_single_threaded

        with torch_single_threaded(self.litert_only):  # torch's threads would compete with XNNPACK's
            imgs_np = _check_images(images)
            given = check_boxes(boxes, [(im.shape[1], im.shape[0]) for im in imgs_np])
            if any(b is None for b in given):
                raise InputError("detect_boxes needs a box list (possibly empty) for every image, not None")
            if not imgs_np:
                return self._empty(torch.zeros((0, 2), dtype=torch.long))
            imgs = _Images(imgs_np, self.device)
            rois_in = [[RoiCandidate(r, float("nan"), k, False) for k, r in enumerate(roi_from_box(b))] for b in given]
            if not any(rois_in):
                return self._empty(imgs.sizes)
            out = self.landmarks_on_rois(imgs, rois_in)
            return self.repeat_on_landmark_rois(imgs, rois_in, out, int(refine))

    def repeat_on_landmark_rois(self, imgs: _Images, rois_in: list[list[RoiCandidate]], out: FoundationOutput,
                                passes: int) -> FoundationOutput:
        """Run the landmark net `passes` more times, each on the ROI the previous landmarks give (`next_roi`,
        rotation included); every hand keeps its candidate's score, ROI index and boosted flag."""
        for _ in range(passes):
            nxt = out.next_roi.double().cpu()
            flat = [c for cands in rois_in for c in cands]  # the hands' order in `out` (landmarks_on_rois)
            rois_in = [[RoiCandidate(nxt[j], flat[j].score, flat[j].roi_index, flat[j].boosted)
                        for j in out.per_image(i).tolist()] for i in range(len(rois_in))]
            out = self.landmarks_on_rois(imgs, rois_in)
        return out

    def landmarks_on_rois(self, imgs: _Images, rois_in: list[list[RoiCandidate]]) -> FoundationOutput:
        """Landmark net on every image's ROIs (at least one in all): all hands, before any presence threshold."""
        cfg = self.config
        flat = [(i, c) for i, cands in enumerate(rois_in) for c in cands]
        rois_h = np.stack([to_host(c.roi) for _, c in flat]).astype(np.float64, copy=False)  # (M,5)
        rois_t = torch.from_numpy(rois_h).to(self.device)
        img_t = torch.from_numpy(np.array([i for i, _ in flat], dtype=np.int64))
        maps = crop_affine(rois_h, LANDMARK_SIZE)  # (M,2,3) float64 image px -> crop px
        crops = imgs.net_input(self.landmark_net, img_t, rois_t, LANDMARK_SIZE, "replicate", cfg.exact_resampling,
                               maps)
        lm = self._run_landmarks(crops)
        presence = lm["presence"]
        boost_t = torch.from_numpy(np.array([c.boosted for _, c in flat], dtype=bool))
        rois_lm = rois_h.astype(np.float32)  # the per-hand geometry in numpy on the host (a few rows)
        joints_h, z_h = project_landmarks(to_host(lm["landmarks"]), rois_lm, LANDMARK_SIZE)  # (M,21,2), (M,21)
        world = torch.from_numpy(project_world(to_host(lm["world"]), rois_lm[:, 4]))
        palm_score = np.array([c.score for _, c in flat], dtype=np.float32)
        score = np.where(np.isnan(palm_score), to_host(presence), palm_score)  # carried ROIs: presence is the score
        lo, hi = joints_h.min(1), joints_h.max(1)  # (M,2)
        pad = (hi - lo).max(-1, keepdims=True) * cfg.box_pad
        box = torch.from_numpy(np.concatenate([lo - pad, hi + pad], -1))
        joints, z = torch.from_numpy(joints_h), torch.from_numpy(z_h)
        dev = self.device
        return FoundationOutput(
            image_index=_to(img_t, dev), score=_to(torch.from_numpy(score), dev), box=_to(box, dev),
            roi=_to(torch.from_numpy(rois_lm), dev), joints_2d=_to(joints, dev), joints_z=_to(z, dev),
            presence=_to(presence, dev), mp_handedness=_to(torch.from_numpy(1 - to_host(lm["handedness"])), dev),
            handedness_right=_to(lm["handedness"], dev), world=_to(world, dev), features=_to(lm.get("features"), dev),
            crop_affine=_to(torch.from_numpy(maps.astype(np.float32)), dev),
            roi_index=_to(torch.from_numpy(np.array([c.roi_index for _, c in flat], dtype=np.int64)), dev),
            next_roi=_to(torch.from_numpy(roi_from_landmarks(joints_h.astype(np.float64)).astype(np.float32)), dev),
            image_sizes=_to(imgs.sizes, dev), feature_map=lm.get("feature_map"), boosted=_to(boost_t, dev),
        )

    def _check_rois(self, rois, B: int) -> list[torch.Tensor]:
        """Carried ROIs as a list of (k,5) float64 CPU tensors (empty where None)."""
        if rois is None:
            return [torch.from_numpy(np.zeros((0, 5))) for _ in range(B)]
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
            world=z(0, 21, 3), crop_affine=z(0, 2, 3),
            features=z(0, self.feature_dim) if getattr(self.landmark_net, "has_features", True) else None,
            roi_index=torch.zeros(0, dtype=torch.long, device=d), next_roi=z(0, 5), image_sizes=sizes.to(d),
            feature_map=None, boosted=torch.zeros(0, dtype=torch.bool, device=d))
