"""Synthetic training hands and the measured error model."""
from __future__ import annotations

import json

import pytest
import torch

from handos.data.error_model import STATS_PATH, ErrorModel
from handos.geometry import project
from handos.hand.skeleton import chirality
from handos.model.geometry import landmark_roi, to_roi_frame


@pytest.fixture(scope="session")
def synth():
    """The generator on the project's hand model."""
    from handos.data.synthetic import SyntheticHands
    from handos.hand import HandModel

    return SyntheticHands(HandModel())


@pytest.fixture(scope="session")
def sample(synth):
    """One batch of 64 hands."""
    return synth.sample(64, torch.Generator().manual_seed(0))


def test_shapes_and_projection(sample):
    inp, tgt = sample
    assert inp.joints_2d.shape == (64, 21, 2) and inp.joints_z.shape == (64, 21) and inp.world.shape == (64, 21, 3)
    assert tgt.vertices.ndim == 3 and tgt.joints_3d.shape == (64, 21, 3)
    assert torch.allclose(tgt.joints_3d[:, 0], torch.zeros(64, 3), atol=1e-6)
    cam_pts = tgt.joints_3d + tgt.cam_t[:, None]
    assert (cam_pts[..., 2] > 0.05).all()
    assert torch.allclose(project(cam_pts, inp.camera[:, None], min_depth=1e-4), tgt.joints_2d, atol=1e-2)


def test_left_and_right_are_mirrors(sample):
    _, tgt = sample
    assert 10 < int(tgt.is_left.sum()) < 54
    # the ground-truth chirality matches the label (README rule: +1 left, -1 right)
    assert torch.equal(chirality(tgt.joints_3d) > 0, tgt.is_left)


def test_reproducible(synth):
    a = synth.sample(4, torch.Generator().manual_seed(7))[0].joints_2d
    b = synth.sample(4, torch.Generator().manual_seed(7))[0].joints_2d
    c = synth.sample(4, torch.Generator().manual_seed(8))[0].joints_2d
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noise_matches_measured_statistics(sample):
    inp, tgt = sample
    stats = json.loads(STATS_PATH.read_text())
    roi = landmark_roi(tgt.joints_2d)
    err = to_roi_frame(inp.joints_2d, roi) - to_roi_frame(tgt.joints_2d, roi)  # (B,21,2) ROI units
    measured = torch.tensor(stats["offset_2d_std"]).norm(dim=-1).mean()
    got = (err - err.mean(0)).norm(dim=-1).std(0).mean()  # spread per joint
    assert 0.3 * measured < err.std(0).norm(dim=-1).mean() < 3 * measured, (got, measured)
    # the systematic offset is present on average
    assert torch.allclose(err.mean(0), torch.tensor(stats["offset_2d_mean"]), atol=0.02)


def test_error_model_zero_noise_is_near_identity():
    em = ErrorModel.load(noise_scale=0.0)
    j = torch.rand(3, 21, 2) * 100 + 100
    jc = torch.cat([torch.rand(3, 21, 2) * 0.1, torch.full((3, 21, 1), 0.5)], -1)
    out = em.apply(j, jc, torch.tensor([[500.0, 500, 150, 150]]).expand(3, 4), torch.Generator().manual_seed(0))
    roi = landmark_roi(j)
    d = to_roi_frame(out["joints_2d"], roi) - to_roi_frame(j, roi)
    assert torch.allclose(d, em.offset_2d_mean.expand_as(d), atol=1e-4)


def test_stats_file_is_small_and_complete():
    stats = json.loads(STATS_PATH.read_text())
    assert STATS_PATH.stat().st_size < 50_000
    for key in ("offset_2d_mean", "offset_2d_std", "depth_scale", "depth_res_std", "world_res_std", "miss_rate"):
        assert key in stats
    assert stats["n_2d"] >= 150  # measured on the real dev sets
