"""Metrics on hand-made cases: known transforms, known offsets, known point sets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from handos.eval import metrics


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


@pytest.fixture(scope="module")
def hands() -> np.ndarray:
    """(4, 21, 3) random non-degenerate 'hands' in mm."""
    return np.random.default_rng(0).normal(scale=40.0, size=(4, 21, 3)) + np.array([0, 0, 500.0])


def similar_copies(x: np.ndarray) -> np.ndarray:
    """Each hand rotated, scaled and translated differently."""
    out = []
    for i, h in enumerate(x):
        r = rotation([1, 2 - i, 0.5], 0.3 + i)
        out.append((0.5 + 0.7 * i) * h @ r.T + np.array([10.0 * i, -30, 200]))
    return np.stack(out)


def test_pa_mpjpe_of_similar_copy_is_zero(hands):
    pred = similar_copies(hands)
    assert metrics.mpjpe(pred, hands).min() > 10  # really moved
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, hands), 0, atol=1e-8)
    np.testing.assert_allclose(metrics.procrustes_align(pred, hands), hands, atol=1e-8)


def test_similarity_transform_recovers_parameters(hands):
    r_true = rotation([0.2, 1, -0.4], 1.1)
    src = hands[0]
    dst = 1.7 * src @ r_true.T + np.array([5, 6, 7])
    s, r, t = metrics.similarity_transform(src, dst)
    assert s == pytest.approx(1.7)
    np.testing.assert_allclose(r, r_true, atol=1e-10)
    np.testing.assert_allclose(t, [5, 6, 7], atol=1e-8)


def test_mirrored_copy_is_not_aligned_away(hands):
    mirrored = hands * np.array([-1.0, 1, 1])  # a reflection: the other hand
    err = metrics.pa_mpjpe(mirrored, hands)
    assert (err > 5).all()
    _, r, _ = metrics.similarity_transform(mirrored, hands)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-10)


def test_pa_mpjpe_known_residual():
    # a planar square vs the same square with one corner pushed out of plane: known PA error is positive
    # and scale/rotation/translation of the prediction must not change it.
    gt = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    pred = gt.copy()
    pred[2, 2] = 0.4
    base = float(metrics.pa_mpjpe(pred, gt))
    assert base > 0.01
    moved = 3.0 * pred @ rotation([1, 1, 1], 0.7).T + 9.0
    assert float(metrics.pa_mpjpe(moved, gt)) == pytest.approx(base, rel=1e-9)


def test_torch_matches_numpy(hands):
    pred = similar_copies(hands) + np.random.default_rng(1).normal(scale=3.0, size=hands.shape)
    e_np = metrics.pa_mpjpe(pred, hands)
    e_t = metrics.pa_mpjpe(torch.tensor(pred), torch.tensor(hands))
    assert isinstance(e_t, torch.Tensor)
    np.testing.assert_allclose(e_t.numpy(), e_np, rtol=1e-9)
    np.testing.assert_allclose(
        metrics.mpjpe_root_relative(torch.tensor(pred), torch.tensor(hands)).numpy(),
        metrics.mpjpe_root_relative(pred, hands),
    )


def test_offsets_give_known_errors(hands):
    gt = hands
    pred = gt + np.array([3.0, 4.0, 0.0])  # 5 mm everywhere
    np.testing.assert_allclose(metrics.mpjpe(pred, gt), 5.0)
    np.testing.assert_allclose(metrics.mpjpe_root_relative(pred, gt), 0.0, atol=1e-12)  # pure translation
    np.testing.assert_allclose(metrics.root_depth_error(pred, gt), 0.0)
    deeper = gt + np.array([0, 0, 12.0])
    np.testing.assert_allclose(metrics.root_depth_error(deeper, gt), 12.0)
    # one joint (not the root) moved by 21 mm: root-relative error 21/21 = 1 mm
    one = gt.copy()
    one[:, 5] += np.array([0, 21.0, 0])
    np.testing.assert_allclose(metrics.mpjpe_root_relative(one, gt), 1.0)
    # moving the root by 21 mm moves every other joint relative to it
    root = gt.copy()
    root[:, 0] += np.array([21.0, 0, 0])
    np.testing.assert_allclose(metrics.mpjpe_root_relative(root, gt), 20.0)


def test_nan_joints_are_skipped(hands):
    gt = hands.copy()
    gt[0, 3] = np.nan
    pred = gt + 2.0
    pred[0, 3] = 1e6  # would dominate if counted
    np.testing.assert_allclose(metrics.mpjpe(pred, gt), 2.0 * math.sqrt(3))
    assert np.isfinite(metrics.pa_mpjpe(pred, gt)).all()
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, gt), 0, atol=1e-6)


def test_f_score_known_sets():
    gt = np.array([[0, 0, 0], [10, 0, 0], [20, 0, 0], [30, 0, 0]], float)
    assert metrics.f_score(gt, gt, 5.0)[0] == pytest.approx(1.0)
    # three predictions on GT points, one 100 mm away: precision 3/4; recall 3/4 (the 4th GT point unmatched)
    pred = gt.copy()
    pred[3] = [130, 0, 0]
    f, p, r = metrics.f_score(pred, gt, 5.0)
    assert (p, r) == (pytest.approx(0.75), pytest.approx(0.75))
    assert f == pytest.approx(0.75)
    # shift by 8 mm: F@5 = 0, F@15 = 1
    shifted = gt + np.array([0, 8.0, 0])
    assert metrics.f_score(shifted, gt, 5.0)[0] == 0.0
    assert metrics.f_score(shifted, gt, 15.0)[0] == 1.0
    # different sizes: 2 predictions both on GT points -> precision 1, recall 2/4
    f, p, r = metrics.f_score(gt[:2], gt, 5.0)
    assert (p, r) == (1.0, 0.5)
    assert f == pytest.approx(2 * 0.5 / 1.5)
    # batched + torch
    fb, _, _ = metrics.f_score(np.stack([gt, shifted]), np.stack([gt, gt]), 5.0)
    np.testing.assert_allclose(fb, [1.0, 0.0])
    ft, _, _ = metrics.f_score(torch.tensor(np.stack([gt, shifted])), torch.tensor(np.stack([gt, gt])), 5.0)
    np.testing.assert_allclose(ft.numpy(), [1.0, 0.0])


def test_pa_mpvpe_of_similar_mesh_is_zero(hands):
    verts = np.random.default_rng(3).normal(scale=30, size=(2, 200, 3))
    moved = similar_copies(np.concatenate([verts, verts]))[:2]
    np.testing.assert_allclose(metrics.pa_mpvpe(moved, verts), 0, atol=1e-8)


def test_auc_and_pck3d():
    perfect = np.zeros((5, 21))
    assert metrics.auc(perfect) == pytest.approx(1.0)
    assert metrics.auc(np.full((5, 21), 100.0)) == 0.0
    # errors of exactly 25 mm everywhere: PCK is 0 below 25 and 1 from 25 on -> AUC ~ 0.5
    half = metrics.auc(np.full((3, 21), 25.0), 0, 50, 101)  # thresholds 0, 0.5, ..., 50
    assert half == pytest.approx(0.5, abs=0.01)
    e = np.array([[1.0, 30.0], [np.nan, 2.0]])  # joint 0: 1 valid sample; joint 1: 2 samples
    assert metrics.pck_3d(e, 20.0) == pytest.approx(0.5 * (1.0 + 0.5))
    curve = metrics.pck_curve(e, np.array([0.0, 1.5, 40.0]))
    np.testing.assert_allclose(curve, [0.0, 0.5 * (1.0 + 0.0), 1.0])


def test_tight_box_and_pck2d():
    gt = np.zeros((1, 21, 2))
    gt[0, :, 0] = np.linspace(0, 100, 21)  # box 100 x 40
    gt[0, :, 1] = np.linspace(0, 40, 21)
    assert metrics.tight_box_size(gt)[0] == pytest.approx(100)
    pred = gt.copy()
    pred[0, :10] += np.array([6.0, 0])  # 10 joints 6 px off: miss at 0.05 (5 px), hit at 0.1 (10 px)
    hits05, lab = metrics.pck_2d_hits(pred, gt, 0.05)
    assert hits05.sum() == 11 and lab.sum() == 21
    assert metrics.pck_2d(pred, gt, 0.1) == 1.0
    # unlabelled joints are skipped and do not count in the box
    gt2 = gt.copy()
    gt2[0, 20] = np.nan  # the (100, 40) corner
    assert metrics.tight_box_size(gt2)[0] == pytest.approx(95)
    pred2 = pred.copy()
    pred2[0, 20] = [1e4, 1e4]
    hits, lab = metrics.pck_2d_hits(pred2, gt2, 0.1)
    assert lab.sum() == 20 and hits.sum() == 20
    assert np.isnan(metrics.joint_errors_2d(pred2, gt2)[0, 20])
    assert np.isnan(metrics.tight_box_size(np.full((1, 21, 2), np.nan))[0])


def test_handedness_accuracy():
    assert metrics.handedness_accuracy(["left", "right", "left"], ["left", "left", None]) == 0.5
    assert math.isnan(metrics.handedness_accuracy(["left"], [None]))
