"""Skinning the template to predicted joints: exact at rest, close to FK meshes, mirrored for left hands, and the
same numbers as the per-vertex blend it replaced (tests/decoder_reference.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from decoder_reference import skin_to_joints as reference_skin

from handos.geometry import det3, skew
from handos.hand import HandModel
from handos.model.skinned_mesh import align_rotation, skin_to_joints, skinning_basis


@pytest.fixture(scope="module")
def hand():
    """Our hand model (right), float64."""
    return HandModel().double()


def template(hand, dtype=torch.float64):
    """(rest vertices, rest joints, skin weights)."""
    return hand.rest_vertices.to(dtype), hand.rest_joints.to(dtype), hand.skin_weights.to(dtype)


def skin(joints, hand, is_left, dtype=torch.float64):
    """skin_to_joints with the hand model's template in `dtype`."""
    rv, rj, sw = template(hand, dtype)
    return skin_to_joints(joints.to(dtype), rj, skinning_basis(rv, rj, sw), is_left)


def fk_joints(hand, n, seed, noise=0.0):
    """FK output and its joints (n,21,3) float64 of sampled poses (random global rotation), jittered by `noise` m."""
    gen = torch.Generator().manual_seed(seed)
    pose = torch.zeros(n, 16, 3, dtype=torch.float64)
    pose[:, 1:] = hand.sample_poses(n, generator=gen).double()
    pose[:, 0] = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.8
    out = hand(pose, None, None)
    return out, out.joints + noise * torch.randn(out.joints.shape, generator=gen, dtype=torch.float64)


def test_rest_joints_give_the_rest_mesh(hand):
    rv, rj, _ = template(hand)
    verts = skin(rj[None], hand, torch.tensor([False]))
    assert torch.allclose(verts[0], rv, atol=1e-9)


def test_follows_forward_kinematics(hand):
    out, joints = fk_joints(hand, 8, 1)
    verts = skin(joints, hand, torch.zeros(8, dtype=torch.bool))
    err = (verts - out.vertices).norm(dim=-1)  # (8,V) m
    assert float(err.mean()) < 0.004 and float(err.max()) < 0.02  # only bone twist is unknown from joints
    assert float((hand.joint_regressor.double() @ verts - out.joints).norm(dim=-1).mean()) < 0.004


def test_left_hands_are_mirrored(hand):
    _, rj, _ = template(hand)
    joints = rj[None] + 0.01 * torch.randn(1, 21, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    right = skin(joints, hand, torch.tensor([False]))
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    left = skin(joints * mirror, hand, torch.tensor([True]))
    assert torch.allclose(left, right * mirror, atol=1e-9)


def test_same_numbers_as_the_per_vertex_blend(hand):
    """The folded basis is the old per-joint rotations blended per vertex: equal in float64, and in float32 to the
    rounding float32 itself makes (measured against float64)."""
    _, joints = fk_joints(hand, 16, 4, noise=0.003)
    is_left = torch.arange(16) % 3 == 0
    ref64 = reference_skin(joints, *template(hand), is_left)
    assert torch.allclose(skin(joints, hand, is_left), ref64, atol=1e-12)
    _, clean = fk_joints(hand, 16, 5)
    ref64 = reference_skin(clean, *template(hand), is_left)
    ref32 = reference_skin(clean.float(), *template(hand, torch.float32), is_left)
    new32 = skin(clean, hand, is_left, torch.float32)
    assert new32.dtype == torch.float32
    old_err, new_err = (ref32.double() - ref64).abs().max(), (new32.double() - ref64).abs().max()
    assert new_err < max(2 * old_err, 1e-6), (new_err, old_err)


def test_small_pieces():
    gen = torch.Generator().manual_seed(6)
    m = torch.randn(4, 3, 3, generator=gen, dtype=torch.float64)
    assert torch.allclose(det3(m), torch.linalg.det(m))
    a, b = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    assert torch.allclose(skew(a) @ b[..., None], torch.linalg.cross(a, b)[..., None])
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    r = align_rotation(a, b)
    assert torch.allclose((r @ a[..., None])[..., 0], b) and torch.allclose(r @ r.mT, torch.eye(3, dtype=r.dtype).expand_as(r))


def test_pipeline_mesh_agrees_with_joints(model, realdata):
    (h,) = model(str(realdata / "ge2019_realworld" / "images" / "00002.jpg"))
    reg = HandModel().joint_regressor.double().numpy()
    gap = np.linalg.norm(reg @ h.vertices - h.joints_3d, axis=1)
    assert h.vertices.shape == (reg.shape[1], 3) and gap.mean() < 0.005
