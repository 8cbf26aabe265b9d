"""The foundation's options (`FoundationConfig`) and per-hand results (`FoundationOutput`).

Their own module so that the pipeline (`handos.foundation.pipeline`) and the recall booster
(`handos.foundation.recall`) share them without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from handos.errors import ConfigError
from handos.foundation import MAX_LANDMARK_PASSES, RECALL_MODES

__all__ = ["FoundationConfig", "FoundationOutput"]


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
    landmark_passes: extra landmark-net passes on detected hands, each on the ROI the previous pass's landmarks
        give (MediaPipe's landmarks -> ROI rule, as a tracked hand's next frame gets); 0 = MediaPipe's graph.
        Fine-tuned landmark nets are trained on such landmark ROIs, so their weights folders may set it.
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
    landmark_passes: int = 0

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
        if not 0 <= self.landmark_passes <= MAX_LANDMARK_PASSES:
            raise ConfigError(f"landmark_passes must be in 0..{MAX_LANDMARK_PASSES}, got {self.landmark_passes}")
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
    world landmarks, rotated by the ROI); features (N,C) pooled landmark-net features and feature_map
    (N,C,7,7), or None (the LiteRT runtime gives neither; the decoder reads neither); crop_affine (N,2,3)
    image px -> crop px (224 crop); roi_index (N,) long index into
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
    crop_affine: torch.Tensor
    roi_index: torch.Tensor
    next_roi: torch.Tensor
    image_sizes: torch.Tensor
    features: torch.Tensor | None = None
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

    def select(self, idx: torch.Tensor) -> FoundationOutput:
        """The hands `idx` (indices or bool mask) as a new output (image_sizes kept)."""
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v if (f.name == "image_sizes" or v is None) else v[idx]
        return FoundationOutput(**kw)

    def to(self, device: torch.device | str) -> FoundationOutput:
        """All tensors moved to `device`."""
        return FoundationOutput(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                                   for f in fields(self)})
