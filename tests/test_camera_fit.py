"""The camera translation fit: exact on noiseless projections, pulled to the prior when 2D says nothing."""
from __future__ import annotations

import torch

from handos.model.camera_fit import fit_translation


def project(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Pinhole projection (N,21,3) -> (N,21,2) px."""
    fx, fy, cx, cy = camera.unbind(-1)
    return torch.stack([fx[:, None] * points[..., 0] / points[..., 2] + cx[:, None],
                        fy[:, None] * points[..., 1] / points[..., 2] + cy[:, None]], -1)


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


def test_pipeline_meshes_reproject_onto_keypoints(model, realdata):
    hands = model(str(realdata / "ge2019_realworld" / "images" / "00002.jpg"))
    (hand,) = hands
    cam = model.camera_for(model.load_images([str(realdata / "ge2019_realworld" / "images" / "00002.jpg")])[0])
    camera = torch.tensor([[cam.fx, cam.fy, cam.cx, cam.cy]], dtype=torch.float64)
    reproj = project(torch.as_tensor(hand.joints_3d, dtype=torch.float64)[None], camera)[0].numpy()
    assert abs(hand.joints_3d[0] - hand.cam_t).max() < 1e-6  # cam_t is the wrist
    assert float(((reproj - hand.keypoints_2d) ** 2).sum(-1).mean() ** 0.5) < 6.5  # 7.6 px without the fit, 5.8 with it (shipped weights)
