"""The foundation's pipeline around the nets: anchors, palm decoding, weighted NMS, ROIs, crops, detect().

Geometry is checked against hand-made cases and OpenCV (which MediaPipe's CPU graph uses); the end-to-end
parity test runs MediaPipe itself (tools/parity/mp_reference.py in .venv-mediapipe) via subprocess.
"""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from handos.errors import ConfigError, InputError
from handos.foundation.anchors import PALM_ANCHOR_OPTIONS, palm_anchors
from handos.foundation.palm import PalmDetections, decode_detections, letterbox_rois, remove_letterbox, weighted_nms
from handos.foundation.pipeline import Foundation, FoundationConfig, FoundationOutput, _Images
from handos.foundation.recall import confirm_recall, dedup_hands, recall_views
from handos.foundation.roi import (
    crop_affine,
    crop_images,
    invert_affine,
    normalize_radians,
    project_landmarks,
    project_world,
    roi_corners,
    roi_from_landmarks,
    roi_from_palm,
)
from handos.geometry import box_iou

REPO = Path(__file__).resolve().parents[1]
MP_PYTHON = REPO / ".venv-mediapipe" / "bin" / "python"
WEIGHTS = REPO / "handos" / "weights" / "hand_landmark_full.safetensors"


# ----------------------------------------------------------------------------- anchors
def test_anchor_count_and_layout():
    a = palm_anchors()
    assert a.shape == (2016, 4)
    # stride 8: 24x24 cells x 2 anchors; strides 16 (3 layers merged): 12x12 cells x 6 anchors
    assert torch.allclose(a[0], torch.tensor([0.5 / 24, 0.5 / 24, 1, 1]))
    assert torch.allclose(a[1], a[0])
    assert torch.allclose(a[1151], torch.tensor([23.5 / 24, 23.5 / 24, 1, 1]))
    assert torch.allclose(a[1152], torch.tensor([0.5 / 12, 0.5 / 12, 1, 1]))
    assert torch.allclose(a[1152:1158], a[1152].expand(6, 4))
    assert torch.allclose(a[-1], torch.tensor([11.5 / 12, 11.5 / 12, 1, 1]))
    # x runs fastest inside a row
    assert torch.allclose(a[2, :2], torch.tensor([1.5 / 24, 0.5 / 24]))


def _embedded_graph_options() -> bytes | None:
    """Bytes of MediaPipe's framework library (subgraph configs are serialized inside), if installed."""
    libs = sorted((REPO / ".venv-mediapipe").glob("lib/python3*/site-packages/mediapipe/python/_framework_bindings*.so"))
    return libs[0].read_bytes() if libs else None


def _f32(x: float) -> bytes:
    return np.float32(x).tobytes()


def test_graph_numbers_match_the_wheel():
    """The constants we use appear, as serialized proto fields, inside MediaPipe's own subgraphs."""
    blob = _embedded_graph_options()
    if blob is None:
        pytest.skip("mediapipe venv (.venv-mediapipe) not found: cannot read the wheel's graphs")
    o = PALM_ANCHOR_OPTIONS
    # SsdAnchorsCalculatorOptions: 1:192 2:192 3:min_scale 4:max_scale 5:0.5 6:0.5 7:4 10:strides 11:ar 14:fixed
    ssd = (b"\x08" + bytes([o.input_size_width, 1]) + b"\x10" + bytes([o.input_size_height, 1])
           + b"\x1d" + _f32(o.min_scale) + b"\x25" + _f32(o.max_scale) + b"\x2d" + _f32(o.anchor_offset_x)
           + b"\x35" + _f32(o.anchor_offset_y) + b"\x38" + bytes([o.num_layers])
           + b"".join(b"\x50" + bytes([s]) for s in o.strides) + b"\x5d" + _f32(o.aspect_ratios[0]) + b"\x70\x01")
    assert ssd in blob
    # RectTransformationCalculatorOptions of the palm ROI (2.6, 2.6, shift_y -0.5, square_long) and of the
    # landmarks ROI (2.0, 2.0, shift_y -0.1, square_long)
    assert b"\x0d" + _f32(2.6) + b"\x15" + _f32(2.6) + b"\x35" + _f32(-0.5) + b"\x38\x01" in blob
    assert b"\x0d" + _f32(2.0) + b"\x15" + _f32(2.0) + b"\x35" + _f32(-0.1) + b"\x38\x01" in blob
    # NMS: min_suppression_threshold 0.3, IOU, WEIGHTED; normalize_z 0.4 of the landmarks
    assert b"\x1d" + _f32(0.3) + b"\x20\x03\x38\x01" in blob
    assert b"\x08\x15\x10\xe0\x01\x18\xe0\x01\x2d" + _f32(0.4) in blob


# ----------------------------------------------------------------------------- decoding and NMS
def test_decode_hand_made_regressors():
    anchors = palm_anchors()
    reg = torch.zeros(1, 2016, 18)
    logits = torch.full((1, 2016, 1), -10.0)
    i = 1500
    reg[0, i, :4] = torch.tensor([19.2, -9.6, 96.0, 48.0])  # cx +0.1, cy -0.05, w 0.5, h 0.25
    reg[0, i, 4:6] = torch.tensor([0.0, 19.2])  # keypoint 0 at anchor + (0, 0.1)
    logits[0, i, 0] = 2.0
    logits[0, 0, 0] = 1e6  # clipped to 100 -> sigmoid 1
    boxes, kps, scores = decode_detections(reg, logits, anchors)
    ax, ay = anchors[i, :2].tolist()
    assert torch.allclose(boxes[0, i], torch.tensor([ax + 0.1 - 0.25, ay - 0.05 - 0.125, ax + 0.1 + 0.25,
                                                     ay - 0.05 + 0.125]), atol=1e-6)
    assert torch.allclose(kps[0, i, 0], torch.tensor([ax, ay + 0.1]), atol=1e-6)
    assert torch.allclose(kps[0, i, 1], torch.tensor([ax, ay]), atol=1e-6)
    assert scores[0, i].item() == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    assert scores[0, 0].item() == pytest.approx(1.0)
    assert torch.isfinite(scores).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), min_score=st.floats(0.0, 1.0))
def test_decode_above_is_decode_detections_on_the_kept_anchors(seed, min_score):
    """The host decode of one image's anchors at or above a score equals the full decode's rows, bit for bit."""
    from handos.foundation.palm import decode_above, decode_tables, palm_scores

    g = torch.Generator().manual_seed(seed)
    reg = torch.randn(2, 2016, 18, generator=g) * 40
    logits = torch.randn(2, 2016, 1, generator=g) * 3
    tables = decode_tables(palm_anchors())
    boxes, kps, scores = decode_detections(reg, logits, tables)
    assert torch.equal(scores, palm_scores(logits))
    for j in range(2):
        b, k, s = decode_above(reg[j].numpy(), scores[j].numpy(), tables, min_score)
        keep = scores[j] >= min_score
        assert np.array_equal(b, boxes[j][keep].numpy()) and np.array_equal(k, kps[j][keep].numpy())
        assert np.array_equal(s, scores[j][keep].numpy()) and b.shape == (int(keep.sum()), 4) and k.shape[1:] == (7, 2)


def _det(boxes, scores, kp_offset=0.0):
    b = torch.tensor(boxes, dtype=torch.float32)
    k = (b[:, None, :2] + kp_offset).expand(-1, 7, 2).clone()
    return b, k, torch.tensor(scores, dtype=torch.float32)


def test_weighted_nms_merges_clusters_by_score():
    # A and B overlap (IoU 0.6), C is apart; D overlaps C by exactly IoU 1/3 > 0.3
    boxes, kps, scores = _det([[0.0, 0.0, 1.0, 1.0],  # A 0.6
                               [0.0, 0.0, 1.0, 0.6],  # B 0.9 (IoU with A = 0.6)
                               [2.0, 2.0, 3.0, 3.0],  # C 0.7
                               [2.5, 2.0, 3.5, 3.0]],  # D 0.55 (IoU with C = 1/3)
                              [0.6, 0.9, 0.7, 0.55])
    out = weighted_nms(boxes, kps, scores, 0.3)
    assert len(out) == 2
    assert out.scores.tolist() == pytest.approx([0.9, 0.7])  # top score of each cluster, by score
    w = torch.tensor([0.9, 0.6])
    exp = (torch.tensor([[0.0, 0.0, 1.0, 0.6], [0.0, 0.0, 1.0, 1.0]]) * w[:, None]).sum(0) / w.sum()
    assert torch.allclose(out.boxes[0], exp)
    assert torch.allclose(out.keypoints[0, 0], exp[:2])
    exp2 = (torch.tensor([[2.0, 2.0, 3.0, 3.0], [2.5, 2.0, 3.5, 3.0]]) * torch.tensor([[0.7], [0.55]])).sum(0) / 1.25
    assert torch.allclose(out.boxes[1], exp2)


def test_weighted_nms_threshold_is_strict_and_empty_input():
    # IoU exactly 0.5 with threshold 0.5 -> not merged (MediaPipe: similarity > threshold)
    boxes, kps, scores = _det([[0, 0, 1, 1], [0, 0, 1, 0.5]], [0.9, 0.8])
    assert len(weighted_nms(boxes, kps, scores, 0.5)) == 2
    assert len(weighted_nms(boxes, kps, scores, 0.49)) == 1
    e = weighted_nms(torch.zeros(0, 4), torch.zeros(0, 7, 2), torch.zeros(0), 0.3)
    assert len(e) == 0 and e.boxes.shape == (0, 4) and e.keypoints.shape == (0, 7, 2)


def test_letterbox_removal_round_trip():
    sizes = torch.tensor([[400, 200], [150, 300], [256, 256]])
    rois, pads = letterbox_rois(sizes)
    assert torch.allclose(pads[0], torch.tensor([0, 0.25, 0, 0.25], dtype=pads.dtype))
    assert torch.allclose(pads[1], torch.tensor([0.25, 0, 0.25, 0], dtype=pads.dtype))
    assert rois[0].tolist() == [200, 100, 400, 400, 0]
    for j in range(3):
        W, H = sizes[j].tolist()
        p_img = torch.tensor([[0.2 * W, 0.7 * H]], dtype=torch.float64)  # px in the image
        # image px -> letterbox px -> normalised letterbox coords
        a = crop_affine(rois[j:j + 1], 192)[0]
        q = (a[:, :2] @ p_img.T + a[:, 2:]).T / 192
        det = PalmDetections(torch.cat([q, q], -1), q[:, None].expand(1, 7, 2), torch.ones(1))
        back = remove_letterbox(det, pads[j])
        assert torch.allclose(back.keypoints[0, 0] * torch.tensor([W, H]), p_img[0], atol=1e-9)


# ----------------------------------------------------------------------------- ROI geometry
def test_palm_roi_rotation_scale_shift():
    box = torch.tensor([[100.0, 100.0, 140.0, 160.0]])  # 40 x 60, centre (120, 130)
    kp = torch.zeros(1, 7, 2)
    kp[0, 0] = torch.tensor([120.0, 150.0])  # wrist below
    kp[0, 2] = torch.tensor([120.0, 110.0])  # middle base above -> upright hand, rotation 0
    r = roi_from_palm(box, kp)[0]
    assert r.tolist() == pytest.approx([120.0, 130.0 - 30.0, 156.0, 156.0, 0.0])  # shift 0.5 h up, 2.6 x long side
    kp[0, 2] = torch.tensor([160.0, 150.0])  # middle base to the right -> fingers point right
    r = roi_from_palm(box, kp)[0]
    assert r[4].item() == pytest.approx(math.pi / 2)
    assert r[:2].tolist() == pytest.approx([120.0 + 30.0, 130.0])  # shifted towards the fingers
    kp[0, 2] = torch.tensor([120.0, 190.0])  # pointing down -> rotation wraps to -pi
    assert roi_from_palm(box, kp)[0, 4].item() == pytest.approx(-math.pi)


def test_normalize_radians_range():
    a = torch.linspace(-20, 20, 1001, dtype=torch.float64)
    n = normalize_radians(a)
    assert (n >= -math.pi).all() and (n < math.pi).all()
    assert torch.allclose(torch.sin(n), torch.sin(a)) and torch.allclose(torch.cos(n), torch.cos(a))


def _hand(angle: float, center=(200.0, 150.0), scale=1.0) -> torch.Tensor:
    """Synthetic upright hand landmarks (21,2) px rotated by `angle` (rad, clockwise on screen)."""
    rng = np.random.default_rng(3)
    up = np.zeros((21, 2))
    up[0] = (0, 40)
    for f, x in enumerate([-30, -15, 0, 15, 30]):  # thumb..pinky columns
        for j in range(4):
            up[1 + 4 * f + j] = (x * (1.2 if f == 0 else 1), 10 - 18 * j - (0 if f == 0 else 10))
    up += rng.normal(0, 0.5, up.shape)
    up *= scale
    c, s = math.cos(angle), math.sin(angle)
    R = np.array([[c, -s], [s, c]])
    return torch.tensor(up @ R.T + np.array(center))


def test_roi_from_landmarks_follows_rotation_and_translation():
    base = roi_from_landmarks(_hand(0.0)[None])[0]
    assert abs(base[4].item()) < 0.1  # upright hand -> small rotation
    assert base[2].item() == pytest.approx(base[3].item())  # square
    for ang in (0.7, -2.0, 3.0):
        r = roi_from_landmarks(_hand(ang)[None])[0]
        d = normalize_radians(torch.tensor(r[4].item() - base[4].item() - ang, dtype=torch.float64))
        assert abs(d.item()) < 1e-6
        assert r[2].item() == pytest.approx(base[2].item(), rel=1e-6)
        # centre rotates with the hand about the rotation centre
        c, s = math.cos(ang), math.sin(ang)
        v = base[:2] - torch.tensor([200.0, 150.0], dtype=base.dtype)
        exp = torch.tensor([c * v[0] - s * v[1], s * v[0] + c * v[1]]) + torch.tensor([200.0, 150.0])
        assert torch.allclose(r[:2], exp.to(r.dtype), atol=1e-6)
    moved = roi_from_landmarks(_hand(0.0, center=(260.0, 90.0))[None], (640, 480))[0]
    assert torch.allclose(moved[:2] - base[:2], torch.tensor([60.0, -60.0], dtype=base.dtype), atol=1e-6)
    # scale 2 x the (12-landmark) extent, shift -0.1 h along the hand's up axis
    p = _hand(0.0)[list((0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18))]
    assert base[2].item() == pytest.approx(2.0 * float((p.amax(0) - p.amin(0)).max()), rel=0.05)


def test_crop_round_trip_is_identity():
    rois = torch.tensor([[120.0, 80.0, 90.0, 90.0, 0.4], [30.0, 200.0, 50.0, 50.0, -2.5]], dtype=torch.float64)
    a = crop_affine(rois, 224)
    corners = roi_corners(rois)  # (2,4,2)
    uv = torch.einsum("nij,nkj->nki", a[:, :, :2], corners) + a[:, None, :, 2]
    exp = torch.tensor([[0, 0], [224, 0], [224, 224], [0, 224]], dtype=torch.float64)
    assert torch.allclose(uv, exp.expand(2, 4, 2), atol=1e-9)
    pts = torch.rand(2, 21, 2, dtype=torch.float64) * 300
    uvp = torch.einsum("nij,nkj->nki", a[:, :, :2], pts) + a[:, None, :, 2]
    lm = torch.cat([uvp, torch.zeros(2, 21, 1, dtype=torch.float64)], -1)
    back, _ = project_landmarks(lm, rois, 224)
    assert torch.allclose(back, pts, atol=1e-9)
    assert torch.allclose(invert_affine(invert_affine(a)), a, atol=1e-9)


def test_project_landmarks_z_and_world_rotation():
    rois = torch.tensor([[100.0, 100.0, 112.0, 112.0, math.pi / 2]])
    lm = torch.tensor([[[112.0, 56.0, 22.4]]])  # above the centre in the crop
    j, z = project_landmarks(lm, rois, 224)
    assert j[0, 0].tolist() == pytest.approx([100.0 + 28.0, 100.0])  # crop up = image right for rot 90 deg
    assert z[0, 0].item() == pytest.approx(22.4 / 224 / 0.4 * 112)
    w = project_world(torch.tensor([[[1.0, 0.0, 0.5]]]), torch.tensor([math.pi / 2]))
    assert w[0, 0].tolist() == pytest.approx([0.0, 1.0, 0.5], abs=1e-6)


def _mp_crop(img: np.ndarray, roi, size: int, border: int) -> np.ndarray:
    """MediaPipe's OpenCV converter (image_to_tensor_converter_opencv.cc): boxPoints + warpPerspective."""
    cx, cy, w, h, rot = [float(v) for v in roi]
    src = cv2.boxPoints(((cx, cy), (w, h), rot * 180 / math.pi)).astype(np.float32)
    dst = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


@pytest.fixture(scope="module")
def textured_images():
    rng = np.random.default_rng(0)
    out = []
    for (h, w) in [(120, 160), (200, 90), (120, 160)]:
        im = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 1.5)
        out.append(np.ascontiguousarray(im))
    return out


def test_crops_match_opencv_as_mediapipe_uses_it(textured_images):
    rois = [[80.0, 60.0, 70.0, 70.0, 0.3], [40.0, 100.0, 150.0, 150.0, -1.9], [5.0, 5.0, 40.0, 40.0, 2.8]]
    for im in textured_images[:2]:
        t = torch.from_numpy(im).permute(2, 0, 1)[None].float()
        for roi in rois:
            for border, cvb in (("replicate", cv2.BORDER_REPLICATE), ("zero", cv2.BORDER_CONSTANT)):
                mine = crop_images(t, torch.zeros(1, dtype=torch.long), torch.tensor([roi]), 224, border)[0]
                ref = _mp_crop(im, roi, 224, cvb)
                d = np.abs(mine.permute(1, 2, 0).numpy() - ref.astype(np.float32))
                assert d.max() <= 1.0 and (d > 0).mean() < 0.05, (border, roi, d.max(), (d > 0).mean())


@pytest.mark.parametrize("opencv", ["1", "0"])
def test_batched_crops_equal_per_image_crops(textured_images, opencv, monkeypatch):
    monkeypatch.setenv("HANDOS_CV2_CROPS", opencv)
    imgs = _Images(textured_images, torch.device("cpu"))
    idx = torch.tensor([2, 0, 1, 0, 1])
    rois = torch.tensor([[50.0, 40.0, 60.0, 60.0, 0.5], [80.0, 60.0, 100.0, 100.0, 0.0],
                         [45.0, 100.0, 80.0, 80.0, -1.0], [10.0, 110.0, 30.0, 30.0, 3.0],
                         [0.0, 0.0, 50.0, 50.0, 1.0]], dtype=torch.float64)
    batched = imgs.crop(idx, rois, 64, "replicate", True)
    for k in range(len(idx)):
        t = torch.from_numpy(textured_images[int(idx[k])]).permute(2, 0, 1)[None].float()
        single = crop_images(t, torch.zeros(1, dtype=torch.long), rois[k:k + 1], 64, "replicate", True)
        if opencv == "1":  # OpenCV itself vs our torch emulation of it: sample positions round differently
            d = (batched[k] - single[0]).abs()
            assert d.max() <= 3 and (d > 0).float().mean() < 0.05
        else:
            assert torch.equal(batched[k], single[0])
    if opencv == "1":  # and the OpenCV path equals cv2.warpAffine on each image
        m = crop_affine(rois[:1], 64)[0].numpy()
        ref = cv2.warpAffine(textured_images[2], m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        assert torch.equal(batched[0], torch.from_numpy(ref).permute(2, 0, 1).float())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(8, 300), w=st.integers(8, 300),
       cx=st.floats(-1.0, 2.0), cy=st.floats(-1.0, 2.0), side=st.floats(0.05, 3.0), aspect=st.floats(0.5, 2.0),
       rot=st.floats(-7.0, 7.0), size=st.sampled_from([224, 192, 37]))
def test_opencv_crops_equal_warp_affine_bit_for_bit(seed, h, w, cx, cy, side, aspect, rot, size):
    """The OpenCV crops (replicate-padded source where the ROI leaves the image, shifted inverse map) are
    cv2.warpAffine's own crops of the whole image, for ROIs inside, across the edge and far outside."""
    from handos.foundation.roi import crop_images_cv2_uint8

    im = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    s = side * max(h, w)
    roi = np.array([[cx * w, cy * h, s, s * aspect, rot]])
    m = crop_affine(roi, size)[0]
    for border, cvb in (("replicate", cv2.BORDER_REPLICATE), ("zero", cv2.BORDER_CONSTANT)):
        mine = crop_images_cv2_uint8([im], torch.zeros(1, dtype=torch.long), torch.from_numpy(roi), size, border)[0]
        ref = cv2.warpAffine(im, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cvb, borderValue=(0, 0, 0))
        assert np.array_equal(mine, ref), (border, roi, np.abs(mine.astype(int) - ref).max())


def test_replicate_padded_source_pads_only_what_the_crop_samples():
    """Inside the image: the image itself; across the edge: a small padded copy; far outside: the image."""
    from handos.foundation.roi import opencv_inverse_affine, replicate_padded_source

    im = np.zeros((100, 200, 3), np.uint8)
    for roi, padded in (([100.0, 50.0, 40.0, 40.0, 0.3], False), ([5.0, 50.0, 60.0, 60.0, 0.0], True),
                        ([100.0, 50.0, 5000.0, 5000.0, 0.0], False), ([900.0, 50.0, 40.0, 40.0, 0.0], False)):
        inv = opencv_inverse_affine(crop_affine(np.array([roi]), 64)[0])
        src, m = replicate_padded_source(im, inv, 64)
        assert (src is not im) == padded, roi
        if padded:
            assert src.shape[0] * src.shape[1] < 80 * 80 and np.array_equal(m[:, :2], inv[:, :2])


# ----------------------------------------------------------------------------- pipeline with stand-in nets
class _FakePalm(torch.nn.Module):
    """Palm net stand-in: one confident palm per image at a fixed letterbox position (counts its calls)."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.images = 0

    def forward(self, x):
        self.calls += 1
        self.images += x.shape[0]
        b = x.shape[0]
        reg = torch.zeros(b, 2016, 18)
        logits = torch.full((b, 2016, 1), -5.0)
        i = 1152 + (6 * 12 + 6) * 6  # anchor at (6.5/12, 6.5/12) of the 192 input
        reg[:, i, 2:4] = 40.0  # 40 x 40 px palm box
        reg[:, i, 5] = 15.0  # keypoint 0 (wrist) 15 px below the anchor
        reg[:, i, 9] = -15.0  # keypoint 2 (middle base) 15 px above
        logits[:, i] = 3.0
        logits[:, i + 1] = 2.0  # a second, overlapping candidate -> merged by NMS
        reg[:, i + 1] = reg[:, i]
        reg[:, i + 1, 0] = 2.0
        return reg, logits


class _FakeLandmarks(torch.nn.Module):
    """Landmark net stand-in: fixed landmarks in crop px, presence from the crop's mean brightness."""

    def __init__(self, presence: float = 0.9):
        super().__init__()
        self.presence = presence
        g = torch.linspace(60, 164, 21)
        self.lm = torch.stack([g, g.flip(0), torch.linspace(-10, 10, 21)], -1)

    def forward(self, x):
        b = x.shape[0]
        return {"landmarks": self.lm.expand(b, 21, 3).clone(), "presence": torch.full((b,), self.presence),
                "handedness": torch.full((b,), 0.2), "world": torch.zeros(b, 21, 3),
                "features": x.mean((2, 3)).repeat(1, 4), "feature_map": x[:, :, :7, :7]}


def _fake_foundation(presence=0.9, **cfg) -> Foundation:
    cfg.setdefault("recall_boost", False)
    f = Foundation(_FakePalm(), _FakeLandmarks(presence), FoundationConfig(**cfg))
    f.feature_dim = 12
    return f


def test_detect_with_stand_in_nets_projects_to_pixels(textured_images):
    f = _fake_foundation()
    out = f.detect(textured_images)
    assert isinstance(out, FoundationOutput)
    assert len(out) == 3 and out.image_index.tolist() == [0, 1, 2]
    for k in range(3):
        W, H = out.image_sizes[out.image_index[k]].tolist()
        side = max(W, H)
        # the palm box centre (6.5/12 of the letterbox) in image px, then shifted 0.5 box h up
        palm_c = torch.tensor([6.5 / 12 * side - (side - W) / 2, 6.5 / 12 * side - (side - H) / 2])
        r = out.roi[k]
        assert r[4].item() == pytest.approx(0.0, abs=1e-5)
        assert r[2].item() == pytest.approx(2.6 * 40 / 192 * side, rel=1e-3)
        assert r[1].item() < palm_c[1].item()
        # joints: crop px -> image px through the ROI, and the affine maps them back
        a = out.crop_affine[k]
        uv = (a[:, :2] @ out.joints_2d[k].T + a[:, 2:]).T
        assert torch.allclose(uv, f.landmark_net.lm[:, :2], atol=1e-3)
        assert torch.allclose(out.joints_z[k], f.landmark_net.lm[:, 2] / 224 / 0.4 * r[2], atol=1e-4)
    assert torch.allclose(out.handedness_right, torch.full((3,), 0.2))
    assert torch.allclose(out.mp_handedness, torch.full((3,), 0.8))
    assert out.features.shape == (3, 12)
    assert (out.box[:, :2] < out.joints_2d.amin(1)).all() and (out.box[:, 2:] > out.joints_2d.amax(1)).all()
    assert out.per_image(1).tolist() == [1]
    assert (out.roi_index == -1).all()
    assert f.palm_net.calls == 1  # one batched detector call for 3 images


def test_detect_tracking_skips_the_detector_and_low_presence_drops(textured_images):
    f = _fake_foundation()
    first = f.detect(textured_images[:2])
    calls = f.palm_net.calls
    rois = [first.next_roi[first.per_image(i)] for i in range(2)]
    # max_hands=1: both images already track one hand -> no palm detection at all
    second = f.detect(textured_images[:2], rois=rois, max_hands=1)
    assert f.palm_net.calls == calls
    assert second.roi_index.tolist() == [0, 0]
    assert torch.allclose(second.score, second.presence)
    assert torch.allclose(second.roi, torch.cat(rois).float())
    # max_hands=2: detector runs; its ROI overlaps the carried one little -> both kept, palm first
    third = f.detect(textured_images[:1], rois=rois[:1], max_hands=2)
    assert f.palm_net.calls == calls + 1
    # carried ROI identical to the palm ROI -> association keeps one (the carried one)
    palm_roi = first.roi[first.per_image(0)]
    fourth = f.detect(textured_images[:1], rois=[palm_roi], max_hands=2)
    assert len(fourth) == 1 and fourth.roi_index.tolist() == [0]
    assert len(third) >= 1
    lost = _fake_foundation(presence=0.3).detect(textured_images, rois=[None, rois[1], None])
    assert len(lost) == 0 and lost.joints_2d.shape == (0, 21, 2) and lost.features.shape == (0, 12)


def test_detect_rejects_bad_input(textured_images):
    f = _fake_foundation()
    with pytest.raises(InputError):
        f.detect(textured_images[0])
    with pytest.raises(InputError):
        f.detect([textured_images[0].astype(np.float32)])
    with pytest.raises(InputError):
        f.detect(textured_images[:2], rois=[None])
    with pytest.raises(InputError):
        f.detect(textured_images[:1], rois=[np.array([[1, 2, 0, 3, 0]])])
    with pytest.raises(ConfigError):
        FoundationConfig(min_presence=2.0)
    assert len(f.detect([])) == 0


def test_recall_boost_views_fill_free_slots_and_dedup(textured_images):
    plain = _fake_foundation(max_hands=2)
    boosted = _fake_foundation(max_hands=2, recall_boost=True, boost_min_presence=0.5)
    assert boosted.config.recall_boost and FoundationConfig().recall_boost  # on by default
    a = plain.detect(textured_images)
    b = boosted.detect(textured_images)
    # the stand-in palm sits at the same view position in every view: extra candidates land elsewhere in
    # the image, their (fixed) landmarks differ -> kept; MediaPipe's own hands are unchanged and first
    assert boosted.palm_net.images > plain.palm_net.images
    for i in range(3):
        pa, pb = a.per_image(i), b.per_image(i)
        assert 1 <= len(pb) <= 2
        assert torch.equal(b.joints_2d[pb[0]], a.joints_2d[pa[0]]) and not b.boosted[pb[0]]
        assert b.boosted[pb[1:]].all()
    # the 160x120 images are elongated enough for long-side tiles (3) plus the zoomed-out letterbox
    assert recall_views((160, 120), boosted.config)[0][2] == pytest.approx(1.5 * 160)
    assert len(recall_views((160, 120), boosted.config)) == 1 + 3 and len(recall_views((100, 100), boosted.config)) == 1
    # duplicates: the same landmarks twice -> one hand
    dup = b.select(torch.tensor([0, 0]))
    dup.boosted = torch.tensor([False, True])
    assert len(dedup_hands(dup, boosted.config, 2)) == 1
    # presence below boost_min_presence -> boosted candidates dropped, MediaPipe's kept
    strict = _fake_foundation(max_hands=2, recall_boost=True, boost_min_presence=0.95)
    assert strict.detect(textured_images).boosted.sum().item() == 0


def test_recall_modes_config_and_cost(textured_images):
    assert FoundationConfig().recall_boost == "fast"
    assert FoundationConfig(recall_boost=True).recall_boost == "full"
    assert FoundationConfig(recall_boost=False).recall_boost == "off"
    with pytest.raises(ConfigError):
        FoundationConfig(recall_boost="thorough")
    images = {}
    for mode in ("off", "fast", "full", "search"):
        f = _fake_foundation(max_hands=2, recall_boost=mode)
        f.detect(textured_images)
        images[mode] = f.palm_net.images
    # the stand-in finds one palm per image: "fast" adds no detector view (MediaPipe found a hand), "full"
    # adds its views on every image with a free slot, "search" many more
    assert images["off"] == images["fast"] == len(textured_images)
    assert images["off"] < images["full"] < images["search"]
    # search views cover the image at every scale
    views = recall_views((160, 120), _fake_foundation(recall_boost="search").config, "search")
    v = torch.tensor(views)
    for scale in {round(x, 3) for x in v[:, 2].tolist()}:
        at = v[torch.isclose(v[:, 2], torch.tensor(scale))]
        half = at[:, 2:3] / 2
        assert (at[:, :2] - half).min(0).values.le(0.5).all() or scale >= 160  # reaches the top-left ...
        assert ((at[:, 0] + half[:, 0]).max() >= 160 - 0.5) and ((at[:, 1] + half[:, 0]).max() >= 120 - 0.5)


def test_dedup_drops_small_and_same_side_overlapping_boosted_hands(textured_images):
    f = _fake_foundation(max_hands=3, recall_boost="full")
    one = f.detect(textured_images[:1])
    base = one.select(torch.tensor([0, 0, 0]))
    base.boosted = torch.tensor([False, True, True])
    j = base.joints_2d.clone()
    side = float((base.box[0, 2:] - base.box[0, :2]).max())
    j[1, :, 0] += 0.5 * side  # same handedness, half a hand to the right: boxes overlap -> a second view, dropped
    j[2] = (j[2] - j[2].mean(0)) * 0.2 + j[2].mean(0) + 2 * side  # a fifth of the size, elsewhere -> dropped
    base.joints_2d = j
    lo, hi = j.amin(1), j.amax(1)
    base.box = torch.cat([lo, hi], -1)
    assert len(dedup_hands(base, f.config, 3)) == 1
    other_side = base.select(torch.tensor([0, 1]))
    other_side.handedness_right = torch.tensor([0.1, 0.9])  # interacting hands: overlap, other handedness -> kept
    assert len(dedup_hands(other_side, f.config, 3)) == 2


def test_confirm_recall_shortcut_equals_the_full_check(textured_images):
    f = _fake_foundation(max_hands=2)
    one_each = f.detect(textured_images)  # the stand-in finds one hand per image, none boosted
    assert len(one_each) == len(textured_images) and not one_each.boosted.any()
    assert confirm_recall(one_each, f.config, 2) is one_each  # nothing to confirm, repeat or cap
    full = dedup_hands(one_each, f.config, 2)  # what the full check keeps: everything, in order
    assert torch.equal(full.joints_2d, one_each.joints_2d) and torch.equal(full.image_index, one_each.image_index)
    # two hands in one image take the full check: the same hand twice is kept once
    twice = one_each.select(torch.tensor([0, 0, 1]))
    kept = confirm_recall(twice, f.config, 2)
    assert kept.image_index.tolist() == [0, 1]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_roi_geometry_is_the_same_on_numpy_and_torch(n, seed):
    g = np.random.default_rng(seed)
    joints = g.uniform(-50, 700, (n, 21, 2))
    boxes = np.sort(g.uniform(0, 640, (n, 2, 2)), axis=1).reshape(n, 4)  # x1 y1 x2 y2
    palm_kp = g.uniform(0, 640, (n, 7, 2))
    rois = np.concatenate([g.uniform(0, 640, (n, 2)), g.uniform(20, 400, (n, 1)).repeat(2, 1),
                           g.uniform(-np.pi, np.pi, (n, 1))], 1)
    lm = g.uniform(0, 224, (n, 21, 3))
    t = torch.from_numpy
    cases = [
        (roi_from_landmarks(joints), roi_from_landmarks(t(joints))),
        (roi_from_palm(boxes, palm_kp), roi_from_palm(t(boxes), t(palm_kp))),
        (crop_affine(rois, 224), crop_affine(t(rois), 224)),
        (project_landmarks(lm, rois)[0], project_landmarks(t(lm), t(rois))[0]),
        (project_landmarks(lm, rois)[1], project_landmarks(t(lm), t(rois))[1]),
        (project_world(lm, rois[:, 4]), project_world(t(lm), t(rois[:, 4]))),
        (box_iou(boxes, boxes[::-1]), box_iou(t(boxes), t(boxes[::-1].copy()))),
    ]
    for on_numpy, on_torch in cases:
        assert isinstance(on_numpy, np.ndarray) and isinstance(on_torch, torch.Tensor)
        np.testing.assert_allclose(on_numpy, on_torch.numpy(), rtol=1e-12, atol=1e-9)
    iou32 = box_iou(boxes.astype(np.float32), boxes.astype(np.float32))  # float32 stays float32 (the NMS)
    assert iou32.dtype == np.float32 and np.allclose(np.diag(iou32), 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- real weights, real images
@pytest.fixture(scope="module")
def foundation():
    """MediaPipe-equivalent foundation (recall booster off) with the shipped weights."""
    torch.set_num_threads(2)
    return Foundation.load("cpu", config=FoundationConfig(recall_boost=False))


@pytest.fixture(scope="module")
def ge_images(realdata):
    ann = json.loads((realdata / "ge2019_realworld" / "derived_annotations.json").read_text())
    files = [str(realdata / "ge2019_realworld" / im["file"]) for im in ann["images"][:24]]
    return files, [cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB) for f in files]


@pytest.mark.slow
def test_end_to_end_parity_with_mediapipe(foundation, ge_images, tmp_path):
    """Landmarks within 1 px of MediaPipe's own runtime on >= 95 % of joints (ge2019 images)."""
    if not MP_PYTHON.exists():
        pytest.skip("reference runtime absent: create .venv-mediapipe (see .ci/setup_mediapipe_venv.sh)")
    files, imgs = ge_images
    ref_path = tmp_path / "mp.npz"
    subprocess.run([str(MP_PYTHON), str(REPO / "tools" / "parity" / "mp_reference.py"), "hands", "--out",
                    str(ref_path), *files], check=True, capture_output=True, timeout=600)
    ref = np.load(ref_path)
    out = foundation.detect(imgs)
    assert out.image_index.bincount(minlength=len(imgs)).tolist() == ref["count"].tolist()
    errs, z_err, world_err, hand_err = [], [], [], []
    for k in range(len(ref["image_index"])):
        cand = out.per_image(int(ref["image_index"][k]))
        d = torch.stack([torch.linalg.norm(out.joints_2d[j].double() - torch.tensor(ref["landmarks_px"][k, :, :2]), dim=-1)
                         for j in cand])
        j = int(d.mean(1).argmin())
        errs.append(d[j])
        z_err.append((out.joints_z[cand[j]].double() - torch.tensor(ref["landmarks_px"][k, :, 2])).abs())
        world_err.append((out.world[cand[j]].double() - torch.tensor(ref["world"][k])).abs().max().item())
        lab, sc = ref["handedness_label"][k], ref["handedness_score"][k]
        hand_err.append(abs(out.mp_handedness[cand[j]].item() - (sc if lab == "Right" else 1 - sc)))
    errs, z_err = torch.cat(errs), torch.cat(z_err)
    assert (errs <= 1.0).float().mean().item() >= 0.95, errs.max()
    assert (z_err <= 1.0).float().mean().item() >= 0.95, z_err.max()  # z in px: MediaPipe's z x width
    assert np.median(world_err) < 2e-3  # metres
    assert max(hand_err) < 0.02


def test_recall_boost_finds_more_hands_on_real_images(foundation, realdata):
    """panoptic: MediaPipe finds 3 of 4 hands; the booster adds the 4th, keeps MediaPipe's 3 unchanged."""
    ann = json.loads((realdata / "panoptic" / "derived_annotations.json").read_text())
    imgs = [cv2.cvtColor(cv2.imread(str(realdata / "panoptic" / im["file"])), cv2.COLOR_BGR2RGB)
            for im in ann["images"]]
    plain = foundation.detect(imgs)
    boosted = Foundation(foundation.palm_net, foundation.landmark_net, FoundationConfig(recall_boost=True)).detect(imgs)
    assert len(boosted) > len(plain)
    gts = [np.array(h["joints_2d"], float) for im in ann["images"] for h in im["hands"]]
    gi = [i for i, im in enumerate(ann["images"]) for _ in im["hands"]]

    def found(out):
        n = 0
        for g, i in zip(gts, gi):
            side = (g.max(0) - g.min(0)).max()
            d = [np.linalg.norm(out.joints_2d[j].numpy() - g, axis=1).mean() for j in out.per_image(i).tolist()]
            n += bool(d) and min(d) < 0.5 * side
        return n

    assert found(boosted) == len(boosted) > found(plain)  # every extra hand is a real hand
    mp_own = boosted.select(~boosted.boosted)
    assert torch.allclose(mp_own.joints_2d, plain.joints_2d, atol=1e-3)  # batch size changes GEMM rounding


def test_real_image_tracking_reproduces_detection(foundation, ge_images):
    """Carrying the landmark ROI to the same image lands on the same hand without the detector."""
    _, imgs = ge_images
    first = foundation.detect(imgs[:4])
    rois = [first.next_roi[first.per_image(i)] for i in range(4)]
    again = foundation.detect(imgs[:4], rois=rois, max_hands=1)
    assert len(again) == len(first)
    err = torch.linalg.norm(again.joints_2d - first.joints_2d, dim=-1).mean(1)
    assert (err < 5.0).all(), err
    assert torch.equal(again.roi_index, torch.zeros(len(again), dtype=torch.long))


def test_landmark_passes_rerun_on_the_landmark_roi(foundation, ge_images):
    """landmark_passes=1: same hands, scores and order; the landmarks are those of a second pass on next_roi."""
    import dataclasses

    _, imgs = ge_images
    first = foundation.detect(imgs[:4])
    two = Foundation(foundation.palm_net, foundation.landmark_net,
                     dataclasses.replace(foundation.config, landmark_passes=1)).detect(imgs[:4])
    assert torch.equal(two.image_index, first.image_index) and torch.equal(two.score, first.score)
    assert torch.allclose(two.roi, first.next_roi, atol=1e-4)  # the second pass ran on the landmark ROI
    manual = foundation.detect(imgs[:4], rois=[first.next_roi[first.per_image(i)] for i in range(4)], max_hands=1)
    assert torch.allclose(two.joints_2d, manual.joints_2d, atol=1e-3)
    assert not torch.allclose(two.joints_2d, first.joints_2d, atol=1e-2)
    with pytest.raises(ConfigError):
        FoundationConfig(landmark_passes=9)


def test_overlay_artifact(foundation, realdata, artifacts):
    """Draw ROIs (rotated squares, top edge thick) and joints on real images for a human to look at."""
    names = [("ge2019_realworld", 0), ("panoptic", 1), ("rhd", 0)]
    tiles = []
    for s, k in names:
        ann = json.loads((realdata / s / "derived_annotations.json").read_text())
        img = cv2.cvtColor(cv2.imread(str(realdata / s / ann["images"][k]["file"])), cv2.COLOR_BGR2RGB)
        out = foundation.detect([img])
        assert len(out) >= 1
        canvas = img.copy()
        for j in range(len(out)):
            c = roi_corners(out.roi[j:j + 1].double())[0].numpy().round().astype(np.int32)
            cv2.polylines(canvas, [c], True, (255, 255, 0), 2)
            cv2.line(canvas, tuple(c[0]), tuple(c[1]), (255, 0, 0), 5)  # crop's top edge: towards the fingers
            for p in out.joints_2d[j].numpy():
                cv2.circle(canvas, (int(p[0]), int(p[1])), 3, (0, 255, 0), -1)
            # fingertips lie on the top half of the crop
            uv = (out.crop_affine[j, :, :2] @ out.joints_2d[j, [8, 12, 16]].T + out.crop_affine[j, :, 2:]).T
            assert (uv[:, 1] < 150).all()
        h = 320
        tiles.append(cv2.resize(canvas, (int(canvas.shape[1] * h / canvas.shape[0]), h)))
    cv2.imwrite(str(artifacts / "foundation_rois.png"), cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR))
