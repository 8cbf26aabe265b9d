"""Rotated hand ROIs: palm -> ROI, landmarks -> ROI, batched affine crops and projection back.

All geometry is in image pixels with OpenCV's convention (pixel k has its centre at k), as MediaPipe's
CPU graph uses it. An ROI is `(cx, cy, w, h, rotation)` (px, px, px, px, rad); rotation turns the crop's
axes clockwise on screen (y down), as `cv::RotatedRect` / MediaPipe's `NormalizedRect.rotation`.
A crop of size S maps crop coordinate u in [0, S] (pixel edges, as MediaPipe's ImageToTensorCalculator)
to the image point `c + R(rot) @ ((u / S - 0.5) * (w, h))`.

Numbers (read off the `mediapipe==0.10.21` graphs, see docs in `PALM_TO_ROI` / `LANDMARKS_TO_ROI`):
- PalmDetectionDetectionToRoi: rotation from palm keypoint 0 (wrist) to 2 (middle-finger base), target
  90 deg; RectTransformation scale 2.6 x 2.6, shift_y -0.5, square_long.
- HandLandmarkLandmarksToRoi: HandLandmarksToRect on landmarks (0,1,2,3,5,6,9,10,13,14,17,18), rotation
  from wrist to the mean of (middle MCP, mean(index MCP, ring MCP)), target 90 deg; RectTransformation
  scale 2.0 x 2.0, shift_y -0.1, square_long.
- Box prompts (ours, `BOX_TO_ROI`): a hand box of unknown rotation -> an upright square ROI on its centre,
  1.5 x its longer side: on ge2019's first 100 images MediaPipe's own landmark ROI is a median 1.49 x
  (quartiles 1.42, 1.63) the longer side of the tight box of all 21 joints.
- HandLandmarkCpu: 224x224 crop, BORDER_REPLICATE, values /255 to [0, 1]; TensorsToLandmarks
  normalize_z 0.4; LandmarkProjection (z scaled with the ROI width); WorldLandmarkProjection (rotation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from handos.geometry import Array, box_iou, to_host, xp_of

__all__ = [
    "RectTransform", "PALM_TO_ROI", "LANDMARKS_TO_ROI", "BOX_TO_ROI", "PARTIAL_LANDMARKS", "normalize_radians",
    "transform_rect", "roi_from_palm", "roi_from_landmarks", "roi_from_box", "crop_affine", "invert_affine",
    "crop_images", "crop_images_cv2_uint8", "opencv_inverse_affine", "replicate_padded_source", "project_landmarks",
    "project_world", "roi_corners", "axis_aligned_iou",
]


@dataclass(frozen=True)
class RectTransform:
    """MediaPipe `RectTransformationCalculatorOptions` (square_long only)."""

    scale_x: float
    scale_y: float
    shift_x: float = 0.0
    shift_y: float = 0.0
    square_long: bool = True


PALM_TO_ROI = RectTransform(scale_x=2.6, scale_y=2.6, shift_y=-0.5)
LANDMARKS_TO_ROI = RectTransform(scale_x=2.0, scale_y=2.0, shift_y=-0.1)
# a tight hand box -> the landmark crop: the hand fills it as in MediaPipe's landmark ROIs (module docstring)
BOX_TO_ROI = RectTransform(scale_x=1.5, scale_y=1.5)
# HandLandmarksToRectCalculator uses these 12 landmarks (wrist, thumb 1-3, MCP+PIP of the 4 fingers).
PARTIAL_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
TARGET_ANGLE = math.pi / 2


def normalize_radians(angle: Array) -> Array:
    """Wrap angles to [-pi, pi) as MediaPipe's NormalizeRadians."""
    return angle - 2 * math.pi * xp_of(angle).floor((angle + math.pi) / (2 * math.pi))


def _rotation(p0: Array, p1: Array) -> Array:
    """Rotation (N,) that makes the vector p0 -> p1 (N,2) point up (MediaPipe's ComputeRotation)."""
    d = p1 - p0
    return normalize_radians(TARGET_ANGLE - xp_of(d).arctan2(-d[..., 1], d[..., 0]))


def transform_rect(rect: Array, t: RectTransform) -> Array:
    """Shift (in the rotated frame), square and scale rects (N,5) px, as RectTransformationCalculator."""
    xp = xp_of(rect)
    cx, cy, w, h, rot = (rect[..., k] for k in range(5))
    c, s = xp.cos(rot), xp.sin(rot)
    sx, sy = w * t.shift_x, h * t.shift_y
    cx = cx + sx * c - sy * s
    cy = cy + sx * s + sy * c
    if t.square_long:
        w = h = xp.maximum(w, h)
    return xp.stack([cx, cy, w * t.scale_x, h * t.scale_y, rot], -1)


def roi_from_palm(box_xyxy: Array, keypoints: Array, t: RectTransform = PALM_TO_ROI) -> Array:
    """Hand ROIs (N,5) px from palm boxes (N,4) xyxy px and palm keypoints (N,7,2) px (torch or numpy)."""
    x0, y0, x1, y1 = (box_xyxy[..., k] for k in range(4))
    rot = _rotation(keypoints[:, 0], keypoints[:, 2])
    rect = xp_of(box_xyxy).stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, rot], -1)
    return transform_rect(rect, t)


def roi_from_landmarks(joints_2d: Array, image_size=None, t: RectTransform = LANDMARKS_TO_ROI) -> Array:
    """Next-frame ROIs (N,5) px from landmarks (N,21,2) px (MediaPipe's HandLandmarkLandmarksToRoi).

    A numpy array gives a numpy array (~3x cheaper for a few hands on the CPU), anything else a tensor.
    `image_size` ((W,H), or (N,2)) is accepted for interface compatibility: in pixel units the result does
    not depend on it (MediaPipe works in normalised units and multiplies by the size everywhere).
    """
    if not isinstance(joints_2d, (torch.Tensor, np.ndarray)):
        joints_2d = torch.as_tensor(joints_2d, dtype=torch.float32)
    if joints_2d.ndim == 2:
        return roi_from_landmarks(joints_2d[None], image_size, t)[0]
    xp = xp_of(joints_2d)
    p = joints_2d[:, list(PARTIAL_LANDMARKS)]  # (N,12,2)
    mid = ((p[:, 4] + p[:, 8]) / 2 + p[:, 6]) / 2  # mean of index/ring MCP, then with middle MCP
    rot = _rotation(p[:, 0], mid)  # (N,)
    center = (xp.amax(p, 1) + xp.amin(p, 1)) / 2  # (N,2) axis-aligned box centre
    c, s = xp.cos(rot), xp.sin(rot)
    d = p - center[:, None]  # (N,12,2)
    # rotate by -rot into the hand frame
    px = d[..., 0] * c[:, None] + d[..., 1] * s[:, None]
    py = -d[..., 0] * s[:, None] + d[..., 1] * c[:, None]
    pmin = xp.stack([xp.amin(px, 1), xp.amin(py, 1)], -1)
    pmax = xp.stack([xp.amax(px, 1), xp.amax(py, 1)], -1)
    pc = (pmin + pmax) / 2  # (N,2) centre in the hand frame
    cx = pc[:, 0] * c - pc[:, 1] * s + center[:, 0]
    cy = pc[:, 0] * s + pc[:, 1] * c + center[:, 1]
    wh = pmax - pmin
    return transform_rect(xp.stack([cx, cy, wh[:, 0], wh[:, 1], rot], -1), t)


def roi_from_box(box_xyxy: torch.Tensor, t: RectTransform = BOX_TO_ROI) -> torch.Tensor:
    """Upright square ROIs (N,5) px on the centres of hand boxes (N,4) xyxy px (rotation unknown: 0)."""
    x0, y0, x1, y1 = box_xyxy.unbind(-1)
    rect = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, torch.zeros_like(x0)], -1)
    return transform_rect(rect, t)


def crop_affine(rois: Array, size: int) -> Array:
    """Affine maps (N,2,3) image px -> crop px (crop coordinates 0..size over the ROI) for ROIs (N,5), a torch
    tensor or a numpy array (the OpenCV crops: numpy is ~5x cheaper on a handful of ROIs)."""
    xp = xp_of(rois)
    cx, cy, w, h, rot = (rois[:, k] for k in range(5))
    c, s = xp.cos(rot), xp.sin(rot)
    ax, ay = size / w, size / h
    # u = ax * ( c*(x-cx) + s*(y-cy)) + size/2 ;  v = ay * (-s*(x-cx) + c*(y-cy)) + size/2
    row0 = xp.stack([ax * c, ax * s, -ax * (c * cx + s * cy) + size / 2], -1)
    row1 = xp.stack([-ay * s, ay * c, -ay * (-s * cx + c * cy) + size / 2], -1)
    return xp.stack([row0, row1], -2)


def invert_affine(a: torch.Tensor) -> torch.Tensor:
    """Inverse of affine maps (N,2,3)."""
    m = a[:, :, :2]
    mi = torch.linalg.inv(m)
    return torch.cat([mi, -(mi @ a[:, :, 2:])], -1)


def roi_corners(rois: torch.Tensor) -> torch.Tensor:
    """Corners (N,4,2) px of ROIs (N,5): crop (0,0), (S,0), (S,S), (0,S)."""
    cx, cy, w, h, rot = rois.unbind(-1)
    c, s = torch.cos(rot), torch.sin(rot)
    lx = torch.tensor([-0.5, 0.5, 0.5, -0.5], dtype=rois.dtype, device=rois.device)
    ly = torch.tensor([-0.5, -0.5, 0.5, 0.5], dtype=rois.dtype, device=rois.device)
    dx, dy = lx * w[:, None], ly * h[:, None]
    return torch.stack([cx[:, None] + c[:, None] * dx - s[:, None] * dy,
                        cy[:, None] + s[:, None] * dx + c[:, None] * dy], -1)


def crop_images(images: torch.Tensor, image_index: torch.Tensor, rois: torch.Tensor, size: int,
                border: str = "replicate", exact: bool = True) -> torch.Tensor:
    """Crop rotated ROIs (N,5) px out of same-size images (B,3,H,W) -> (N,3,size,size), values as input.

    Samples like OpenCV's warpPerspective(INTER_LINEAR) that MediaPipe uses: crop pixel u is taken at
    the image point of coordinate u (crop->image map of `crop_affine`), `border` 'replicate' or 'zero'.
    With `exact`, sample positions are rounded to 1/32 px and values to integers (uint8 images) as
    OpenCV does; give 0..255 valued images then.
    """
    n = rois.shape[0]
    _, _, H, W = images.shape
    if n == 0:
        return images.new_zeros((0, images.shape[1], size, size))
    dev = images.device
    cx, cy, w, h, rot = rois.to(dev, torch.float64).unbind(-1)
    c, s = torch.cos(rot), torch.sin(rot)
    t = torch.arange(size, dtype=torch.float64, device=dev) / size - 0.5  # crop coordinate u/S - 0.5
    # crop (u, v) -> image (x, y) = c + R(rot) @ ((u/S - 0.5) w, (v/S - 0.5) h); u along the last axis
    x = (cx[:, None, None] + (c * w)[:, None, None] * t[None, None, :] - (s * h)[:, None, None] * t[None, :, None])
    y = (cy[:, None, None] + (s * w)[:, None, None] * t[None, None, :] + (c * h)[:, None, None] * t[None, :, None])
    if exact:  # OpenCV quantises sample positions to 1/32 px (INTER_TAB_SIZE)
        x, y = torch.round(x * 32) / 32, torch.round(y * 32) / 32
    # normalised coords for align_corners=False: pixel centre k -> (2k+1)/W - 1
    grid = torch.stack([(x + 0.5) * (2.0 / W) - 1, (y + 0.5) * (2.0 / H) - 1], -1).to(images.dtype)  # (N,S,S,2)
    src = images[image_index.to(images.device)]
    out = F.grid_sample(src, grid, mode="bilinear", align_corners=False,
                        padding_mode="border" if border == "replicate" else "zeros")
    if exact:
        out = torch.round(out)
    return out


def crop_images_cv2_uint8(images: list, image_index: torch.Tensor, rois: torch.Tensor, size: int,
                          border: str = "replicate", maps: np.ndarray | None = None) -> np.ndarray:
    """`crop_images` with exact resampling on the CPU, done by OpenCV itself: (H,W,3) uint8 arrays -> (N,S,S,3) uint8.

    cv2.warpAffine(INTER_LINEAR) with the `crop_affine` map is what MediaPipe's CPU graph runs, so this is
    exact by construction and ~10x faster than the torch emulation at batch 1. A replicate-border crop that
    reaches past the image edge is warped from a replicate-padded copy of just the region it samples
    (`replicate_padded_source`): the same pixels, without OpenCV's per-pixel border path (~half the time).
    maps: the ROIs' `crop_affine` maps (N,2,3) float64 when the caller already has them.
    """
    import cv2

    n = rois.shape[0]
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    if maps is None:
        maps = crop_affine(to_host(rois).astype(np.float64), size)  # (N,2,3) image px -> crop px
    idx = to_host(image_index)
    for k in range(n):  # one call per crop: OpenCV has no batched warp
        image = images[idx[k]]
        if border == "replicate":
            src, inverse = replicate_padded_source(image, opencv_inverse_affine(maps[k]), size)
            cv2.warpAffine(src, inverse, (size, size), dst=out[k], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
        else:
            cv2.warpAffine(image, maps[k], (size, size), dst=out[k], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out


def opencv_inverse_affine(m: np.ndarray) -> np.ndarray:
    """The inverse (2,3) of an affine map (2,3) float64, with the float64 operations cv2.warpAffine uses to invert
    its map (so warping with WARP_INVERSE_MAP samples exactly where warpAffine(m) does). Python floats: one map
    is six numbers, and numpy's per-call cost would be most of the time."""
    a, b, tx, c, d, ty = m.ravel().tolist()
    det = a * d - b * c
    det = 1.0 / det if det != 0 else 0.0
    a0, a1, a3, a4 = d * det, b * -det, c * -det, a * det
    return np.array([[a0, a1, -a0 * tx - a1 * ty], [a3, a4, -a3 * tx - a4 * ty]])


# padding pays when the copy (per source pixel) costs less than OpenCV's border path (per crop pixel outside the
# image, ~20x a copied pixel on this 2-core VM): pad when region area < PAD_GAIN x crop pixels outside (estimated
# from the region's share outside the image); e.g. ge2019's 293 px ROIs on 256 px images pad (638 -> ~300 us),
# a 500 px ROI 20 % past a 1080p frame's edge does not (its copy would cost 230 us more than it saves)
PAD_GAIN = 8.0


def replicate_padded_source(image: np.ndarray, inverse: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(source, inverse map) to warp a (size, size) replicate-border crop from: where the crop samples past the
    image's edge, the region it samples with the edge pixels replicated around it (cv2.copyMakeBorder) and
    the map shifted onto that region by whole pixels, where that costs less than OpenCV's border path
    (`PAD_GAIN`); otherwise the image and map as given.

    image (H,W,3) uint8; inverse (2,3) crop px -> image px (`opencv_inverse_affine`). Every bilinear sample of
    the crop then reads pixels inside the source, whose values are the clamped-index pixels BORDER_REPLICATE
    would read: the crop is the same, but OpenCV stays on its in-image path.
    """
    import cv2

    h, w = image.shape[:2]
    (a0, a1, b1), (a3, a4, b2) = inverse.tolist()
    last = size - 1.0  # the crop's corner pixels sample the extremes of an affine map
    x_lo = math.floor(b1 + min(0.0, a0 * last) + min(0.0, a1 * last)) - 2  # a pixel of slack each side for the
    y_lo = math.floor(b2 + min(0.0, a3 * last) + min(0.0, a4 * last)) - 2  # fixed-point rounding
    x_hi = math.floor(b1 + max(0.0, a0 * last) + max(0.0, a1 * last)) + 3  # exclusive: a sample at x reads x, x+1
    y_hi = math.floor(b2 + max(0.0, a3 * last) + max(0.0, a4 * last)) + 3
    x0, y0, x1, y1 = max(x_lo, 0), max(y_lo, 0), min(x_hi, w), min(y_hi, h)
    inside = x_lo >= 0 and y_lo >= 0 and x_hi <= w and y_hi <= h
    if inside or x1 <= x0 or y1 <= y0:
        return image, inverse
    area = (x_hi - x_lo) * (y_hi - y_lo)
    outside = size * size * (1.0 - (x1 - x0) * (y1 - y0) / area)  # crop pixels past the edge, roughly
    if area > PAD_GAIN * outside:
        return image, inverse
    src = cv2.copyMakeBorder(image[y0:y1, x0:x1], y0 - y_lo, y_hi - y1, x0 - x_lo, x_hi - x1, cv2.BORDER_REPLICATE)
    return src, np.array([[a0, a1, b1 - x_lo], [a3, a4, b2 - y_lo]])  # the source's pixel (0, 0) is image (x_lo, y_lo)


def crop_images_cv2(images: list, image_index: torch.Tensor, rois: torch.Tensor, size: int,
                    border: str = "replicate") -> torch.Tensor:
    """`crop_images_cv2_uint8` as (N,3,S,S) float32 values 0..255 (channels-last memory)."""
    return torch.from_numpy(crop_images_cv2_uint8(images, image_index, rois, size, border)).permute(0, 3, 1, 2).float()


def project_landmarks(landmarks: Array, rois: Array, size: int = 224, normalize_z: float = 0.4) -> tuple[Array, Array]:
    """Crop-px landmarks (N,21,3) -> image px joints (N,21,2) and z (N,21) in px (MediaPipe's scaling).

    z follows TensorsToLandmarks (z / size / normalize_z) and LandmarkProjection (x ROI width):
    `z_px = z_crop / size / normalize_z * roi_w`. Multiply by 1/W to get MediaPipe's normalised z.
    Torch or numpy (the CPU pipeline: numpy views, cheaper on a few hands).
    """
    xp = xp_of(landmarks)
    cx, cy, w, h, rot = (rois[:, k, None] for k in range(5))
    c, s = xp.cos(rot), xp.sin(rot)
    x = (landmarks[..., 0] / size - 0.5) * w
    y = (landmarks[..., 1] / size - 0.5) * h
    joints = xp.stack([cx + c * x - s * y, cy + s * x + c * y], -1)
    z = landmarks[..., 2] / size / normalize_z * w
    return joints, z


def project_world(world: Array, rot: Array) -> Array:
    """Rotate world landmarks (N,21,3) m about z by the ROI rotation (N,) (WorldLandmarkProjection)."""
    xp = xp_of(world)
    c, s = xp.cos(rot)[:, None], xp.sin(rot)[:, None]
    x, y, z = (world[..., k] for k in range(3))
    return xp.stack([c * x - s * y, s * x + c * y, z], -1)


def axis_aligned_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU (N,M) of the axis-aligned boxes of rects a (N,5) and b (M,5), ignoring rotation (MediaPipe)."""
    def xyxy(r):
        return torch.stack([r[:, 0] - r[:, 2] / 2, r[:, 1] - r[:, 3] / 2,
                            r[:, 0] + r[:, 2] / 2, r[:, 1] + r[:, 3] / 2], -1)
    return box_iou(xyxy(a), xyxy(b))


