"""Skinning the template to predicted joints: exact at rest, close to FK meshes, mirrored for left hands."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from handos.hand import HandModel
from handos.model.skinned_mesh import skin_to_joints


@pytest.fixture(scope="module")
def hand():
    """Our hand model (right)."""
    return HandModel()


def template(hand):
    """(rest vertices, rest joints, skin weights) as float64."""
    return hand.rest_vertices.double(), hand.rest_joints.double(), hand.skin_weights.double()


def test_rest_joints_give_the_rest_mesh(hand):
    rv, rj, sw = template(hand)
    verts = skin_to_joints(rj[None], rv, rj, sw, torch.tensor([False]))
    assert torch.allclose(verts[0], rv, atol=1e-9)


def test_follows_forward_kinematics(hand):
    gen = torch.Generator().manual_seed(1)
    pose = torch.zeros(8, 16, 3, dtype=torch.float64)
    pose[:, 1:] = hand.sample_poses(8, generator=gen).double()
    pose[:, 0] = torch.randn(8, 3, generator=gen, dtype=torch.float64) * 0.8
    out = hand.double()(pose, None, None)
    rv, rj, sw = template(hand)
    verts = skin_to_joints(out.joints, rv, rj, sw, torch.zeros(8, dtype=torch.bool))
    err = (verts - out.vertices).norm(dim=-1)  # (8,V) m
    assert float(err.mean()) < 0.004 and float(err.max()) < 0.02  # only bone twist is unknown from joints
    assert float((hand.joint_regressor.double() @ verts - out.joints).norm(dim=-1).mean()) < 0.004


def test_left_hands_are_mirrored(hand):
    rv, rj, sw = template(hand)
    joints = rj[None] + 0.01 * torch.randn(1, 21, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    right = skin_to_joints(joints, rv, rj, sw, torch.tensor([False]))
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    left = skin_to_joints(joints * mirror, rv, rj, sw, torch.tensor([True]))
    assert torch.allclose(left, right * mirror, atol=1e-9)


def test_pipeline_mesh_agrees_with_joints(model, realdata):
    (h,) = model(str(realdata / "ge2019_realworld" / "images" / "00002.jpg"))
    reg = HandModel().joint_regressor.double().numpy()
    gap = np.linalg.norm(reg @ h.vertices - h.joints_3d, axis=1)
    assert h.vertices.shape == (reg.shape[1], 3) and gap.mean() < 0.005
