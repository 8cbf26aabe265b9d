"""Our generated hand model: mesh quality, proportions, FK/skinning/regressor consistency, limits, mirror."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from handos.geometry import axis_angle_to_matrix, matrix_to_axis_angle
from handos.hand import JOINT_NAMES, PARENTS, HandModel, chirality, mirror_pose
from handos.hand.poses import PRESETS
from handos.io.schema import JOINT_NAMES as SCHEMA_JOINTS


@pytest.fixture(scope="module")
def hm() -> HandModel:
    return HandModel()


@pytest.fixture(scope="module")
def sampled(hm):
    g = torch.Generator().manual_seed(7)
    fingers = hm.sample_poses(48, g)
    glob = torch.randn(48, 1, 3, generator=g)
    return torch.cat([glob, fingers], dim=1)


def _edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    t = verts[faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)


def test_layout_and_interface(hm):
    assert JOINT_NAMES == SCHEMA_JOINTS and len(PARENTS) == 21 and PARENTS[0] == -1
    assert 800 <= hm.num_vertices <= 1500
    assert hm.faces.dtype == torch.long and hm.faces.shape[1] == 3
    assert hm.skin_weights.shape == (hm.num_vertices, 21)
    assert hm.joint_regressor.shape == (21, hm.num_vertices)
    assert torch.allclose(hm.skin_weights.sum(1), torch.ones(hm.num_vertices), atol=1e-5)
    assert (hm.skin_weights >= 0).all() and (hm.joint_regressor >= 0).all()
    assert torch.allclose(hm.joint_regressor.sum(1), torch.ones(21), atol=1e-5)
    assert hm.NUM_SHAPE >= 4
    out = hm(torch.zeros(2, 16, 3), torch.zeros(2, hm.NUM_SHAPE), torch.tensor([False, True]))
    assert out.vertices.shape == (2, hm.num_vertices, 3) and out.joints.shape == (2, 21, 3)
    assert torch.allclose(out.joints[:, 0], torch.zeros(2, 3))


def test_mesh_is_watertight_and_outward(hm):
    faces = hm.faces.numpy()
    verts = hm.rest_vertices.numpy().astype(np.float64)
    e = _edges(faces)
    undirected, counts = np.unique(np.sort(e, axis=1), axis=0, return_counts=True)
    assert np.all(counts == 2), "every edge must be shared by exactly two faces"
    directed = np.unique(e, axis=0)
    assert len(directed) == len(e), "each shared edge must run in opposite directions in its two faces"
    assert len(np.unique(faces)) == len(verts), "no unused vertices"
    assert _signed_volume(verts, faces) > 0, "normals must point outward"
    v, f = len(verts), len(faces)
    assert v - len(undirected) + f == 2, "genus 0 (a sphere-like closed surface)"
    # outward also pointwise: normals of the fingertip faces point away from the hand's centre
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    c = tri.mean(1)
    tip = c[:, 1] < c[:, 1].min() + 0.004  # the middle fingertip region (fingers along -y)
    assert np.all(n[tip, 1] < 0)
    # left faces: the mirrored mesh is outward too
    left = verts * np.array([-1.0, 1.0, 1.0])
    assert _signed_volume(left, hm.faces_for(True).numpy()) > 0
    assert _signed_volume(left, hm.faces_for(False).numpy()) < 0
    assert torch.equal(hm.faces_for("left"), hm.faces_for(True)) and torch.equal(hm.faces_for("right"), hm.faces)


def test_adult_proportions_and_frame(hm):
    j = hm.rest_joints.numpy()
    assert np.allclose(j[0], 0, atol=1e-7)
    # canonical frame: middle finger along -y, index1-pinky1 with no z, thumb on +x, palm toward -z
    mid = j[9] / np.linalg.norm(j[9])
    assert np.allclose(mid, [0, -1, 0], atol=1e-5)
    assert abs(j[5, 2] - j[17, 2]) < 1e-5 and j[5, 0] > j[17, 0]
    assert j[4, 0] > 0.04 and j[2, 2] < -0.005
    palm_width = np.linalg.norm(j[5] - j[17])
    assert 0.065 <= palm_width <= 0.085
    middle = sum(np.linalg.norm(j[k + 1] - j[k]) for k in (9, 10, 11))
    assert 0.095 <= middle <= 0.105
    assert 0.039 <= np.linalg.norm(j[10] - j[9]) <= 0.049
    lengths = {f: sum(np.linalg.norm(j[b + k + 1] - j[b + k]) for k in range(3)) for f, b in
               (("index", 5), ("middle", 9), ("ring", 13), ("pinky", 17))}
    assert lengths["middle"] > lengths["ring"] > lengths["index"] > lengths["pinky"]
    v = hm.rest_vertices.numpy()
    assert 0.17 <= v[:, 1].max() - v[:, 1].min() <= 0.23  # wrist stub to fingertip
    assert 0.025 <= v[:, 2].max() - v[:, 2].min() <= 0.06  # hand thickness


def test_regressor_matches_fk_on_posed_meshes(hm, sampled):
    rest = hm.joint_regressor @ hm.rest_vertices
    assert torch.allclose(rest, hm.rest_joints, atol=1e-7)
    shape = torch.randn(len(sampled), hm.NUM_SHAPE, generator=torch.Generator().manual_seed(1)) * 0.5
    out = hm(sampled, shape)
    reg = torch.einsum("jv,bvc->bjc", hm.joint_regressor, out.vertices)
    err = (reg - out.joints).norm(dim=-1)
    assert err.max() < 0.003, f"regressor vs FK: max {err.max() * 1000:.2f} mm"
    assert err.mean() < 0.0005
    # bones keep their lengths under posing (rigid FK)
    posed = hm(sampled).joints
    for k in range(1, 21):
        p = PARENTS[k]
        rest_len = (hm.rest_joints[k] - hm.rest_joints[p]).norm()
        length = (posed[:, k] - posed[:, p]).norm(dim=-1)
        assert torch.allclose(length, rest_len.expand_as(length), atol=1e-5)


def test_fk_global_rotation_and_batch_independence(hm, sampled):
    out = hm(sampled)
    one = hm(sampled[3:4])
    assert torch.allclose(one.vertices[0], out.vertices[3], atol=1e-6)
    # a pure global rotation rotates the rest hand about the wrist
    rv = torch.tensor([[0.3, -1.2, 0.7]])
    pose = torch.zeros(1, 16, 3)
    pose[:, 0] = rv
    rot = axis_angle_to_matrix(rv)[0]
    assert torch.allclose(hm(pose).vertices[0], hm.rest_vertices @ rot.T, atol=1e-6)


def test_axis_angle_round_trip():
    g = torch.Generator().manual_seed(0)
    rv = torch.randn(200, 3, generator=g)
    rv = rv / rv.norm(dim=-1, keepdim=True) * torch.rand(200, 1, generator=g) * 3.1
    back = matrix_to_axis_angle(axis_angle_to_matrix(rv.double())).float()
    assert torch.allclose(back, rv, atol=1e-4)
    assert torch.allclose(axis_angle_to_matrix(torch.zeros(3)), torch.eye(3))


def test_sampler_respects_limits_and_is_varied(hm):
    g = torch.Generator().manual_seed(0)
    for kind in (None, "uniform", "natural", "blend", "fist"):
        p = hm.sample_poses(256, g, kind=kind)
        assert p.shape == (256, 15, 3)
        assert hm.within_limits(p).all(), kind
    p = hm.sample_poses(512, torch.Generator().manual_seed(1))
    local = hm.pose_to_local(p)
    flex = local[..., 0]
    assert flex[:, 3:].std(0).min() > 0.2, "finger flexion must vary"
    assert (flex[:, 3:].mean(1) > 1.0).any() and (flex[:, 3:].mean(1) < 0.2).any(), "from open to closed"
    again = hm.sample_poses(512, torch.Generator().manual_seed(1))
    assert torch.equal(p, again)


def test_clamp_and_presets(hm):
    wild = torch.randn(64, 15, 3, generator=torch.Generator().manual_seed(2)) * 2
    clamped = hm.clamp_to_limits(wild)
    assert hm.within_limits(clamped).all()
    inside = hm.sample_poses(16, torch.Generator().manual_seed(3))
    assert torch.allclose(hm.clamp_to_limits(inside), inside, atol=1e-6)
    for name in ("flat", "fist", "pinch", "point", "grasp", "ok", "peace"):
        p = hm.pose_preset(name)
        assert p.shape == (15, 3) and hm.within_limits(p), name
    assert set(hm.pose_presets()) == set(PRESETS)
    j = {n: hm(hm.pose_preset(n)[None]).joints[0] for n in ("flat", "fist", "pinch", "point")}
    tips = [4, 8, 12, 16, 20]
    # fist: fingertips close to the palm; flat: far
    assert (j["fist"][tips[1:]].norm(dim=-1) < 0.09).all() and (j["flat"][tips[1:]].norm(dim=-1) > 0.14).all()
    # pinch: the thumb tip meets the index tip; the index points in "point"
    assert (j["pinch"][4] - j["pinch"][8]).norm() < 0.025
    assert j["point"][8].norm() > 0.15 and j["point"][12].norm() < 0.09


def test_left_is_exact_mirror_and_chirality_flips(hm, sampled):
    right = hm(sampled)
    left = hm(sampled, None, torch.ones(len(sampled), dtype=torch.bool))
    m = torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(left.vertices, right.vertices * m, atol=1e-7)
    assert torch.allclose(left.joints, right.joints * m, atol=1e-7)
    assert torch.allclose(hm.mirror_vertices(right.vertices), left.vertices)
    assert (chirality(right.joints) == -1).all() and (chirality(left.joints) == 1).all()
    assert (chirality(right.joints.numpy()) == -1).all()
    # in a camera frame (x right, y down, z forward) after any rigid placement the sign is kept
    rot = axis_angle_to_matrix(torch.tensor([0.4, 2.0, -0.3]))
    cam = right.joints @ rot.T + torch.tensor([0.0, 0.0, 0.5])
    assert (chirality(cam) == -1).all()
    # mirror_pose: a left hand rotated like a right hand by R is the mirror of the right one by M R M
    pose = sampled[:4].clone()
    a = hm(pose, None, torch.ones(4, dtype=torch.bool))
    pose_m = pose.clone()
    pose_m[:, 0] = mirror_pose(pose[:, 0])
    b = hm(pose_m, None, torch.ones(4, dtype=torch.bool))
    ra, rb = axis_angle_to_matrix(pose[:, 0]), axis_angle_to_matrix(pose_m[:, 0])
    assert torch.allclose(rb, torch.diag(m) @ ra @ torch.diag(m), atol=1e-6)
    assert not torch.allclose(a.vertices, b.vertices)


def test_shape_parameters_change_proportions(hm):
    base = hm(torch.zeros(1, 16, 3)).joints[0]
    names = list(hm.shape_names)
    for name in ("scale", "finger_length", "palm_width"):
        s = torch.zeros(1, hm.NUM_SHAPE)
        s[0, names.index(name)] = 2.0
        j = hm(torch.zeros(1, 16, 3), s).joints[0]
        if name == "scale":
            assert torch.allclose(j, base * 1.1, atol=1e-4)
        if name == "finger_length":
            assert (j[12] - j[9]).norm() > 1.08 * (base[12] - base[9]).norm()
        if name == "palm_width":
            assert (j[5] - j[17]).norm() > 1.08 * (base[5] - base[17]).norm()
    with pytest.raises(Exception, match="shape"):
        hm(torch.zeros(1, 16, 3), torch.zeros(1, 3))


def test_bad_pose_shape_is_a_clear_error(hm):
    from handos.errors import InputError

    with pytest.raises(InputError, match="pose"):
        hm(torch.zeros(2, 7, 3))
    assert hm(torch.zeros(2, 15, 3)).vertices.shape[0] == 2
    assert hm(torch.zeros(2, 48)).vertices.shape[0] == 2


def test_cli_exports_obj_and_png(tmp_path):
    from handos.cli.hand import main

    obj, png = tmp_path / "hand.obj", tmp_path / "hand.png"
    assert main(["--pose", "fist", "--out", str(obj), "--png", str(png), "--left", "--view", "side", "--size", "128"]) == 0
    text = obj.read_text().splitlines()
    assert sum(1 for t in text if t.startswith("v ")) == HandModel().num_vertices
    import trimesh

    mesh = trimesh.load(obj, process=False)
    assert mesh.is_watertight and mesh.volume > 0
    import cv2

    img = cv2.imread(str(png))
    assert img.shape == (128, 128, 3) and img.std() > 10
