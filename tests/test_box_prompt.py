"""Box prompts: a box around a hand gives exactly one full hand (ROI geometry, box checks, the real model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from handos.errors import InputError
from handos.eval.run import grown_box, gt_prompt_boxes
from handos.foundation.pipeline import check_boxes
from handos.foundation.roi import BOX_TO_ROI, roi_from_box


def test_roi_from_box_is_an_upright_square_on_the_box_centre():
    rois = roi_from_box(torch.tensor([[10.0, 20.0, 50.0, 120.0], [0.0, 0.0, 30.0, 10.0]], dtype=torch.float64))
    assert rois.shape == (2, 5)
    np.testing.assert_allclose(rois[0].numpy(), [30, 70, 100 * BOX_TO_ROI.scale_x, 100 * BOX_TO_ROI.scale_y, 0])
    np.testing.assert_allclose(rois[1].numpy(), [15, 5, 30 * 1.5, 30 * 1.5, 0])


@pytest.mark.parametrize("boxes, fragment", [
    ([[[0, 0, float("nan"), 5]]], "non-finite"),
    ([[[5, 0, 5, 9]]], "x2 > x1"),
    ([[[0, 9, 5, 3]]], "y2 > y1"),
    ([[[100, 0, 120, 9]]], "outside the 64x48 image"),
    ([[[-30, -30, 0, 0]]], "outside"),
    ([[[0, 0, 1]]], "shape"),
    ([[["a", 0, 1, 2]]], "list of"),
    ([[[0, 0, 1, 1]], []], "2 entries for 1 images"),
])
def test_bad_boxes_give_one_line_errors(boxes, fragment):
    with pytest.raises(InputError, match=fragment) as err:
        check_boxes(boxes, [(64, 48)])
    assert "\n" not in str(err.value)


def test_check_boxes_keeps_partly_inside_boxes_and_none():
    out = check_boxes([[[-10, -10, 5, 5]], None, []], [(64, 48)] * 3)
    assert out[0].shape == (1, 4) and out[1] is None and out[2].shape == (0, 4)


def test_grown_box_scales_each_side_about_the_centre():
    np.testing.assert_allclose(grown_box(np.array([10.0, 20.0, 30.0, 60.0]), 0.2), [8, 16, 32, 64])
    hands = [{"joints_2d": [[10, 20], [30, 60]] + [None] * 19},
             {"joints_2d": [None] * 21, "bbox_xyxy": [0, 0, 10, 10]},  # no joints: its box
             {"joints_2d": [None] * 21}]  # nothing to prompt with
    assert gt_prompt_boxes(hands, 0.2, 100, 100) == [[8, 16, 32, 64], [-1, -1, 11, 11]]


# ---- the real model --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ge_image(realdata: Path):
    """The first ge2019 image (RGB), its GT joints (21,2) and tight joint box."""
    from handos.io.images import load_image

    ann = json.loads((realdata / "ge2019_realworld" / "derived_annotations.json").read_text())
    im = ann["images"][0]
    j = np.asarray(im["hands"][0]["joints_2d"], dtype=np.float64)
    return load_image(realdata / "ge2019_realworld" / im["file"]).rgb, j, [*j.min(0), *j.max(0)]


def test_one_hand_per_box_in_order_never_dropped(model, ge_image):
    rgb, joints, box = ge_image
    h, w = rgb.shape[:2]
    empty = [w - 40.0, h - 40.0, w - 1.0, h - 1.0]  # a corner without the hand: still one hand, low presence
    grown = grown_box(np.asarray(box), 0.2).tolist()
    hands = model(rgb, boxes=[empty, grown])
    assert len(hands) == 2 and [x.trace.roi_index for x in hands] == [0, 1] and [x.id for x in hands] == [0, 1]
    assert hands[0].score < model.score_threshold < hands[1].score  # the presence; no threshold
    assert all(x.score == pytest.approx(x.trace.presence) for x in hands)
    err = np.linalg.norm(hands[1].keypoints_2d - joints, axis=1).mean()
    assert err < 0.05 * max(box[2] - box[0], box[3] - box[1])
    bx = hands[1].bbox_xyxy  # the tightened box: around the predicted keypoints
    assert bx[0] <= hands[1].keypoints_2d[:, 0].min() and bx[2] >= hands[1].keypoints_2d[:, 0].max()
    assert model(rgb, boxes=[]) == []


def test_boxes_leave_detection_alone_and_mix_per_image(model, ge_image):
    rgb, _, box = ge_image
    plain = model.predict_batch([rgb])[0]
    mixed = model.predict_batch([rgb, rgb], boxes=[None, [box, box]])
    assert len(mixed[1]) == 2 and len(mixed[0]) == len(plain)
    for a, b in zip(mixed[0], plain):
        np.testing.assert_allclose(a.keypoints_2d, b.keypoints_2d, atol=1e-4)
    rec = model.record(rgb, file="x.png", boxes=[box])
    assert rec["file"] == "x.png" and len(rec["hands"]) == 1
    with pytest.raises(InputError, match="outside"):
        model(rgb, boxes=[[-50, -50, -10, -10]])


def test_second_pass_uses_the_rotation_the_landmarks_give(model, ge_image):
    rgb, joints, box = ge_image
    fnd = model.foundation
    one = fnd.detect_boxes([rgb], [[box]], refine=0)
    two = fnd.detect_boxes([rgb], [[box]], refine=1)
    assert float(one.roi[0, 4]) == 0.0  # a box has no rotation
    torch.testing.assert_close(two.roi[0], one.next_roi[0])  # the second pass crops the first pass's next ROI
    assert len(two) == 1 and int(two.roi_index[0]) == 0
