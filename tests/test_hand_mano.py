"""The smplx.MANO backend, on SYNTHETIC pickles in MANO's layout built from our own template here.

The synthetic MANO is our mesh with its vertices permuted (so our fingertips sit at MANO's fingertip
vertex ids), rotated into a different rest frame, with 16-joint weights/regressor in MANO's joint
order. Through the adapter it must reproduce our own model's output exactly.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from handos.errors import ConfigError
from handos.hand import HandModel
from handos.hand.mano import MANO_TIP_VERTICES
from handos.hand.skeleton import MANO_JOINTS, PARENTS, TIPS
from handos.hand.template import build_template, effective_weights

# a rest frame unlike ours (MANO's flat hand points the fingers along +x)
Q = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])


def _synthetic_mano(left: bool) -> tuple[dict, np.ndarray]:
    """(pickle dict in MANO's layout, perm) where mano_vertex[i] = our_vertex[perm[i]]."""
    t = build_template()
    v_count = len(t.vertices)
    our_tips = [int(np.argmax(t.joint_regressor[k])) for k in TIPS]
    rest = [i for i in range(v_count) if i not in our_tips]
    perm = np.empty(v_count, dtype=np.int64)
    perm[list(MANO_TIP_VERTICES)] = our_tips
    perm[np.setdiff1d(np.arange(v_count), MANO_TIP_VERTICES)] = rest
    inv = np.argsort(perm)
    verts = t.vertices[perm]
    faces = inv[t.faces]
    shapedirs = np.concatenate([t.shapedirs, np.zeros((v_count, 3, 4))], axis=2)[perm]
    if left:
        verts = verts * np.array([-1.0, 1.0, 1.0])
        shapedirs = shapedirs * np.array([-1.0, 1.0, 1.0])[None, :, None]
        faces = faces[:, [0, 2, 1]]
    mano_parents = [PARENTS[j] for j in MANO_JOINTS]
    kintree = np.array([[MANO_JOINTS.index(p) if p >= 0 else 4294967295 for p in mano_parents], list(range(16))])
    data = {
        "v_template": verts @ Q.T,
        "f": faces.astype(np.uint32),
        "weights": effective_weights(t.skin_weights)[perm][:, list(MANO_JOINTS)],
        "J_regressor": t.joint_regressor[list(MANO_JOINTS)][:, perm],
        "shapedirs": np.einsum("ij,vjs->vis", Q, shapedirs),
        "posedirs": np.zeros((v_count, 3, 135)),
        "kintree_table": kintree,
        "hands_components": np.eye(45),
        "hands_mean": np.zeros(45),
    }
    return data, perm


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    """A folder with synthetic MANO_RIGHT.pkl and MANO_LEFT.pkl."""
    d = tmp_path_factory.mktemp("mano")
    for left, name in ((False, "MANO_RIGHT.pkl"), (True, "MANO_LEFT.pkl")):
        data, _ = _synthetic_mano(left)
        with open(d / name, "wb") as fh:
            pickle.dump(data, fh)
    return d


@pytest.fixture(scope="module")
def ours():
    return HandModel()


def test_mano_backend_matches_our_model(mano_dir, ours, monkeypatch):
    monkeypatch.setenv("HANDOS_MANO_DIR", str(mano_dir))
    mano = HandModel(backend="mano")
    assert mano.NUM_SHAPE == 10 and mano.num_vertices == ours.num_vertices
    _, perm = _synthetic_mano(False)
    g = torch.Generator().manual_seed(3)
    pose = torch.cat([0.5 * torch.randn(6, 1, 3, generator=g), ours.sample_poses(6, g)], dim=1)
    shape = torch.zeros(6, 10)
    shape[:, :6] = torch.randn(6, 6, generator=g)
    is_left = torch.tensor([False, True, False, True, True, False])
    a = ours(pose, shape[:, :6], is_left)
    b = mano(pose, shape, is_left)
    assert torch.allclose(b.joints, a.joints, atol=2e-5)
    assert torch.allclose(b.vertices, a.vertices[:, perm], atol=2e-5)
    # rest data in our frame, regressor consistent, faces per hand
    assert torch.allclose(mano.rest_joints, ours.rest_joints, atol=1e-5)
    assert mano.skin_weights.shape == (ours.num_vertices, 21) and mano.joint_regressor.shape == (21, ours.num_vertices)
    assert mano.faces_for(True).shape == mano.faces.shape


def test_mano_without_left_model_mirrors_right(tmp_path, ours):
    data, perm = _synthetic_mano(False)
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as fh:
        pickle.dump(data, fh)
    mano = HandModel(backend="mano", mano_dir=str(tmp_path))
    pose = ours.pose_preset("pinch")[None]
    left = mano(pose, None, torch.tensor([True]))
    right = mano(pose, None, torch.tensor([False]))
    assert torch.allclose(left.vertices, right.vertices * torch.tensor([-1.0, 1.0, 1.0]), atol=1e-6)
    assert torch.allclose(right.joints, ours(pose).joints, atol=2e-5)


def test_mano_backend_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("HANDOS_MANO_DIR", raising=False)
    with pytest.raises(ConfigError, match="HANDOS_MANO_DIR"):
        HandModel(backend="mano")
    with pytest.raises(ConfigError, match="MANO_RIGHT.pkl"):
        HandModel(backend="mano", mano_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="backend"):
        HandModel(backend="nope")
