"""The camera translation fit: exact on noiseless projections, pulled to the prior when 2D says nothing."""
from __future__ import annotations

import torch

from handos.geometry import project as _project
from handos.model.camera_fit import fit_translation


def project(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Pinhole projection (N,21,3) with cameras (N,4) -> (N,21,2) px."""
    return _project(points, camera[:, None])


def test_recovers_translation_from_exact_projections():
    gen = torch.Generator().manual_seed(0)
    joints = (torch.rand(5, 21, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.15
    truth = torch.tensor([[0.05, -0.02, 0.5], [-0.1, 0.1, 0.8], [0.0, 0.0, 0.3], [0.2, 0.05, 1.2], [0, -0.1, 0.6]],
                         dtype=torch.float64)
    camera = torch.tensor([[500.0, 500.0, 320.0, 240.0]], dtype=torch.float64).expand(5, 4)
    kp = project(joints + truth[:, None], camera)
    fitted = fit_translation(joints, kp, torch.ones(5, 21, dtype=torch.float64), camera, truth * 1.3, 1e-6)
    assert torch.allclose(fitted, truth, atol=1e-4)


def test_zero_weights_return_the_prior():
    joints = torch.zeros(1, 21, 3, dtype=torch.float64)
    prior = torch.tensor([[0.1, 0.2, 0.7]], dtype=torch.float64)
    camera = torch.tensor([[500.0, 500.0, 320.0, 240.0]], dtype=torch.float64)
    fitted = fit_translation(joints, torch.zeros(1, 21, 2, dtype=torch.float64), torch.zeros(1, 21, dtype=torch.float64),
                             camera, prior)
    assert torch.allclose(fitted, prior)


def test_fixed_depth_fit_keeps_depth_and_is_exact_laterally():
    gen = torch.Generator().manual_seed(3)
    joints = (torch.rand(4, 21, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.15
    truth = torch.tensor([[0.05, -0.02, 0.5], [-0.1, 0.1, 0.8], [0.0, 0.0, 0.3], [0.2, 0.05, 1.2]], dtype=torch.float64)
    camera = torch.tensor([[600.0, 610.0, 300.0, 200.0]], dtype=torch.float64).expand(4, 4)
    kp = project(joints + truth[:, None], camera)
    prior = truth + torch.tensor([0.03, -0.02, 0.0], dtype=torch.float64)  # right depth, wrong x, y
    fitted = fit_translation(joints, kp, torch.ones(4, 21, dtype=torch.float64), camera, prior, fit_depth=False)
    assert torch.allclose(fitted, truth, atol=1e-9)


def test_pipeline_fit_moves_hands_onto_their_keypoints(model, realdata):
    path = str(realdata / "ge2019_realworld" / "images" / "00002.jpg")
    cam = model.camera_for(model.load_images([path])[0])
    camera = torch.tensor([[cam.fx, cam.fy, cam.cx, cam.cy]], dtype=torch.float64)
    errors, depths = [], []
    for fit in (False, True):
        model.fit_camera = fit
        try:
            (hand,) = model(path)
        finally:
            model.fit_camera = True
        reproj = project(torch.as_tensor(hand.joints_3d, dtype=torch.float64)[None], camera)[0].numpy()
        errors.append(float(((reproj - hand.keypoints_2d) ** 2).sum(-1).mean() ** 0.5))
        depths.append(float(hand.cam_t[2]))
        assert abs(hand.joints_3d[0] - hand.cam_t).max() < 1e-6  # cam_t is the wrist
    assert errors[1] < errors[0] and depths[0] == depths[1]
