"""Hungarian matching of predicted to GT hands and the per-image scoring built on it."""
from __future__ import annotations

import numpy as np
import pytest

from handos.eval.matching import match_hands, mean_joint_distance
from handos.eval.report import EvalAccumulator, GTHand, PredHand


def hand_2d(cx: float, cy: float, size: float = 100.0) -> np.ndarray:
    """A (21, 2) hand whose tight joint box is `size` x `size` around (cx, cy)."""
    rng = np.random.default_rng(int(cx * 7 + cy))
    pts = rng.uniform(-0.5, 0.5, size=(21, 2))
    pts[0], pts[1] = [-0.5, -0.5], [0.5, 0.5]  # pin the box
    return pts * size + np.array([cx, cy])


def test_two_hands_swapped_order_are_matched_crosswise():
    gt = np.stack([hand_2d(100, 100), hand_2d(400, 100)])
    pred = np.stack([gt[1] + 3.0, gt[0] - 2.0])
    m = match_hands(pred, gt)
    assert sorted(map(tuple, m.pairs.tolist())) == [(0, 1), (1, 0)]
    np.testing.assert_allclose(sorted(m.distances), [2 * np.sqrt(2), 3 * np.sqrt(2)])
    assert len(m.unmatched_pred) == 0 and len(m.unmatched_gt) == 0


def test_gate_at_half_the_box():
    gt = hand_2d(100, 100, size=100)[None]
    near = gt + np.array([49.0, 0])  # mean distance 49 < 50: match
    far = gt + np.array([51.0, 0])  # 51 >= 50: no match
    assert len(match_hands(near, gt).pairs) == 1
    m = match_hands(far, gt)
    assert len(m.pairs) == 0 and m.unmatched_pred.tolist() == [0] and m.unmatched_gt.tolist() == [0]


def test_hungarian_prefers_global_optimum_and_extra_prediction_is_false_positive():
    gt = np.stack([hand_2d(100, 100), hand_2d(160, 100)])
    # pred 0 sits between both; pred 1 is right on GT 0; pred 2 far away
    pred = np.stack([gt[1] - np.array([20.0, 0]), gt[0], hand_2d(900, 900)])
    m = match_hands(pred, gt)
    assert sorted(map(tuple, m.pairs.tolist())) == [(0, 1), (1, 0)]
    assert m.unmatched_pred.tolist() == [2]


def test_unlabelled_joints_are_ignored_in_the_cost():
    gt = hand_2d(100, 100)
    gt_nan = gt.copy()
    gt_nan[5:10] = np.nan
    pred = gt.copy()
    pred[5:10] += 1000.0  # wildly off on exactly the unlabelled joints
    assert mean_joint_distance(pred[None], gt_nan[None])[0, 0] == pytest.approx(0.0)
    assert len(match_hands(pred[None], gt_nan[None]).pairs) == 1


def test_empty_sides():
    gt = hand_2d(100, 100)[None]
    m = match_hands(np.zeros((0, 21, 2)), gt)
    assert len(m.pairs) == 0 and m.unmatched_gt.tolist() == [0]
    m = match_hands(gt, np.zeros((0, 21, 2)))
    assert m.unmatched_pred.tolist() == [0]


def test_accumulator_counts_unmatched_gt_joints_as_misses():
    g1, g2 = hand_2d(100, 100), hand_2d(400, 100)
    gt = [GTHand(g1, None, "left"), GTHand(g2, None, "right")]
    pred = [PredHand(g1 + np.array([1.0, 0]), None, "left"), PredHand(hand_2d(900, 900), None, "left")]
    acc = EvalAccumulator()
    acc.add_image(gt, pred)
    r = acc.report()
    assert r["recall"] == 0.5
    assert r["false_positives"] == 1
    assert r["pck2d@0.05"] == 0.5 and r["pck2d@0.1"] == 0.5  # 21 hits of 42 labelled joints
    assert r["mean_err_2d_px"] == 1.0
    assert r["handedness_acc"] == 1.0
    assert r["pa_mpjpe_mm"] is None and r["root_depth_err_mm"] is None
    assert r["counts"]["gt_hands"] == 2 and r["counts"]["matched"] == 1


def test_accumulator_3d_units_metres_to_mm():
    rng = np.random.default_rng(5)
    j3_mm = rng.normal(scale=30, size=(21, 3)) + np.array([0, 0, 400.0])
    g2 = hand_2d(100, 100)
    gt = GTHand(g2, j3_mm, "right")
    # prediction in metres (schema units), 10 mm too deep, otherwise exact
    hand = {"keypoints_2d": g2.tolist(), "joints_3d": ((j3_mm + np.array([0, 0, 10.0])) / 1000).tolist(), "handedness": "left"}
    acc = EvalAccumulator()
    acc.add_image([gt], [PredHand.from_hand(hand)])
    r = acc.report()
    assert r["root_depth_err_mm"] == pytest.approx(10.0)
    assert r["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert r["mpjpe_rr_mm"] == pytest.approx(0.0, abs=1e-6)
    assert r["auc3d_pa_0_50mm"] == pytest.approx(1.0, abs=0.006)  # float round-off misses only threshold 0
    assert r["handedness_acc"] == 0.0
    # hand-centred 3D (MediaPipe world landmarks): no root depth
    hand["joints_3d_frame"] = "mediapipe_world"
    acc2 = EvalAccumulator()
    acc2.add_image([gt], [PredHand.from_hand(hand)])
    assert acc2.report()["root_depth_err_mm"] is None and acc2.report()["pa_mpjpe_mm"] == pytest.approx(0, abs=1e-6)


def test_markdown_table_rows():
    from handos.eval.report import markdown_table

    acc = EvalAccumulator()
    g = hand_2d(100, 100)
    acc.add_image([GTHand(g, None, "left")], [PredHand(g + 2.0, None, "left")])
    table = markdown_table({"tiny": acc.report()})
    rows = table.splitlines()
    assert rows[0].startswith("| set | images / hands | recall")
    assert rows[2].startswith("| tiny | 1 / 1 | 1.000 | 0 | ")
    assert "| – |" in rows[2]  # no 3D: PA-MPJPE missing


def test_accumulator_mesh_metrics_when_gt_has_vertices():
    rng = np.random.default_rng(9)
    j3 = rng.normal(scale=30, size=(21, 3)) + np.array([0, 0, 400.0])  # mm
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), np.arange(3), indexing="ij"), -1).reshape(-1, 3)
    verts = grid * 20.0 + np.array([0, 0, 400.0])  # 48 points 20 mm apart
    g2 = hand_2d(100, 100)
    gt = GTHand(g2, j3, "right", vertices_3d=verts)
    exact = {"keypoints_2d": g2.tolist(), "joints_3d": (j3 / 1000).tolist(), "vertices": (verts / 1000).tolist(), "handedness": "right"}
    off = dict(exact, vertices=((verts + np.array([0, 8.0, 0])) / 1000).tolist())  # mesh 8 mm off, joints exact
    acc = EvalAccumulator()
    acc.add_image([gt], [PredHand.from_hand(exact)])
    r = acc.report()
    assert r["pa_mpvpe_mm"] == pytest.approx(0, abs=1e-6) and r["f@5mm"] == 1.0 and r["f@15mm"] == 1.0
    acc = EvalAccumulator()
    acc.add_image([gt], [PredHand.from_hand(off)])
    r = acc.report()
    assert r["f@5mm"] == 0.0 and r["f@15mm"] == 1.0  # aligned with the joints' transform: the 8 mm offset stays
    assert r["pa_mpvpe_mm"] == pytest.approx(0, abs=1e-6)  # its own Procrustes removes a pure offset
