"""Dataset loaders on tiny fixtures written in each dataset's published layout.

Joint-order checks are by NAME: each test spells the source order as documented by the dataset's own
code (HO-3D `jointsMapManoToSimple` / MANO joint order, dex-ycb-toolkit `_MANO_JOINTS`, COCO-WholeBody
hand names) and checks that the joint the loader calls `ours[i]` is the source joint of the same name.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handos.data.loaders import (
    HO3D,
    CocoWholeBodyHands,
    DexYCB,
    FreiHAND,
    HamerNpz,
    HInt,
    load_dataset,
    write_eval_annotations,
)
from handos.errors import InputError
from handos.io.schema import JOINT_NAMES

# Source orders transcribed from the datasets' documentation / code, in OUR naming.
HO3D_SOURCE_NAMES = (  # MANO order + tips: wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3, tips T I M R P
    "wrist", "index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3", "thumb4", "index4", "middle4", "ring4", "pinky4",
)
DEXYCB_TOOLKIT_NAMES = (  # dex_ycb_toolkit _MANO_JOINTS
    "wrist", "thumb_mcp", "thumb_pip", "thumb_dip", "thumb_tip", "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "little_mcp", "little_pip", "little_dip", "little_tip",
)
COCO_WB_HAND_NAMES = (  # mmpose coco_wholebody_hand / HInt's coco_wholebody_hand.py
    "wrist", "thumb1", "thumb2", "thumb3", "thumb4", "forefinger1", "forefinger2", "forefinger3", "forefinger4",
    "middle_finger1", "middle_finger2", "middle_finger3", "middle_finger4", "ring_finger1", "ring_finger2",
    "ring_finger3", "ring_finger4", "pinky_finger1", "pinky_finger2", "pinky_finger3", "pinky_finger4",
)


def _ours_name(name: str) -> str:
    """A source joint name in our naming."""
    name = name.replace("forefinger", "index").replace("_finger", "").replace("little", "pinky")
    for k, suffix in (("_mcp", "1"), ("_pip", "2"), ("_dip", "3"), ("_tip", "4")):
        if name.endswith(k):
            return name[: -len(k)] + suffix
    return name


def test_name_tables_cover_our_joints():
    for table in (HO3D_SOURCE_NAMES, DEXYCB_TOOLKIT_NAMES, COCO_WB_HAND_NAMES):
        assert sorted(_ours_name(n) for n in table) == sorted(JOINT_NAMES)
    assert _ours_name("thumb_mcp") == "thumb1" and _ours_name("little_tip") == "pinky4"


def source_joints(names: tuple[str, ...], dim: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Distinct per-joint values in a source order, and the same values keyed by our joint name."""
    vals = np.random.default_rng(seed).uniform(-1, 1, size=(21, dim))
    by_name = {_ours_name(n): vals[i] for i, n in enumerate(names)}
    return vals, by_name


def write_image(path: Path, w: int = 40, h: int = 30) -> None:
    """A tiny RGB image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


# ------------------------------------------------------------------ FreiHAND


@pytest.fixture(scope="module")
def freihand_root(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """2 training samples (versions 0 and 1 of the images), 1 evaluation sample."""
    root = tmp_path_factory.mktemp("freihand")
    rng = np.random.default_rng(0)
    xyz = rng.normal(scale=0.03, size=(2, 21, 3)) + np.array([0.0, 0.0, 0.6])  # metres
    K = np.array([[[400.0, 0, 112], [0, 410.0, 110], [0, 0, 1]]] * 2)
    for split, n in (("training", 2), ("evaluation", 1)):
        (root / f"{split}_xyz.json").write_text(json.dumps(xyz[:n].tolist()))
        (root / f"{split}_K.json").write_text(json.dumps(K[:n].tolist()))
        (root / f"{split}_mano.json").write_text(json.dumps([[list(range(61))]] * n))
        for k in range(n * (2 if split == "training" else 1)):
            write_image(root / split / "rgb" / f"{k:08d}.jpg", 224, 224)
    return root, xyz, K


def test_freihand_units_projection_versions(freihand_root):
    root, xyz, K = freihand_root
    ds = FreiHAND(root, "training")
    assert len(ds) == 4  # 2 samples x 2 versions present on disk
    s = ds[3]  # version 1 of sample 1
    assert s["meta"]["index"] == 1 and s["meta"]["version"] == "hom"
    hand = s["hands"][0]
    np.testing.assert_allclose(hand["joints_3d"], xyz[1] * 1000)  # order unchanged, metres -> mm
    u = xyz[1][:, 0] / xyz[1][:, 2] * 400 + 112
    v = xyz[1][:, 1] / xyz[1][:, 2] * 410 + 110
    np.testing.assert_allclose(hand["joints_2d"], np.stack([u, v], 1))
    assert s["camera"] == {"fx": 400.0, "fy": 410.0, "cx": 112.0, "cy": 110.0}
    assert (s["width"], s["height"]) == (224, 224) and hand["handedness"] == "right"
    assert s["meta"]["mano"].shape == (61,)
    assert Path(s["image_path"]).name == "00000003.jpg"
    ev = FreiHAND(root, "evaluation")
    assert len(ev) == 1 and np.allclose(ev[0]["hands"][0]["joints_3d"], xyz[0] * 1000)


def test_freihand_missing_layout_is_input_error(tmp_path):
    with pytest.raises(InputError, match="training_xyz.json"):
        FreiHAND(tmp_path)
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("nope", str(tmp_path))


# ------------------------------------------------------------------ HO-3D v3


@pytest.fixture(scope="module")
def ho3d_root(tmp_path_factory):
    """train/SEQ with one annotated frame and one without annotation; evaluation/SEQ with a root-only frame."""
    root = tmp_path_factory.mktemp("ho3d")
    src, by_name = source_joints(HO3D_SOURCE_NAMES, 3, seed=1)
    src_gl = src * 0.05 + np.array([0.02, 0.1, -0.5])  # OpenGL: in front of the camera is -z, up is +y
    cam = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])
    metas = {
        ("train", "ABF10", "0000"): {"handJoints3D": src_gl, "camMat": cam, "handPose": np.zeros(48),
                                     "handTrans": np.zeros(3), "handBeta": np.zeros(10), "objName": "x"},
        ("train", "ABF10", "0001"): {"handJoints3D": None, "camMat": cam, "objName": "x"},
        ("evaluation", "SM1", "0000"): {"handJoints3D": np.array([0.0, -0.05, -0.4]), "camMat": cam,
                                        "handBoundingBox": np.array([300.0, 250, 380, 330])},
    }
    for (split, seq, fid), meta in metas.items():
        write_image(root / split / seq / "rgb" / f"{fid}.jpg", 64, 48)
        (root / split / seq / "meta").mkdir(parents=True, exist_ok=True)
        with open(root / split / seq / "meta" / f"{fid}.pkl", "wb") as f:
            pickle.dump(meta, f, protocol=2)
    return root, src_gl, by_name, cam


def test_ho3d_joint_order_and_opengl_flip(ho3d_root):
    root, src_gl, by_name, cam = ho3d_root
    ds = HO3D(root, "train")
    assert len(ds) == 2
    s = ds[0]
    j3 = s["hands"][0]["joints_3d"]
    for i, name in enumerate(JOINT_NAMES):  # ours[i] is the source joint of the same name (flipped, mm)
        expect = (by_name[name] * 0.05 + np.array([0.02, 0.1, -0.5])) * np.array([1, -1, -1]) * 1000
        np.testing.assert_allclose(j3[i], expect, err_msg=name)
    assert (j3[:, 2] > 0).all()  # in front of the camera in OpenCV terms
    # the hand is 'up' in GL (y_gl = +0.1 m), so it projects above the principal point
    j2 = s["hands"][0]["joints_2d"]
    assert (j2[:, 1] < 240).all()
    np.testing.assert_allclose(j2[:, 0], j3[:, 0] / j3[:, 2] * 600 + 320)
    assert s["hands"][0]["handedness"] == "right" and s["meta"]["seq"] == "ABF10"
    assert ds[1]["hands"] == []  # frame without annotation


def test_ho3d_evaluation_root_only(ho3d_root):
    root, *_ = ho3d_root
    s = HO3D(root, "evaluation")[0]
    hand = s["hands"][0]
    assert hand["joints_3d"] is None
    np.testing.assert_allclose(s["meta"]["root_3d_mm"], [0, 50, 400])
    np.testing.assert_allclose(hand["joints_2d"][0], [320, 240 + 50 / 400 * 600])
    assert np.isnan(hand["joints_2d"][1:]).all()
    np.testing.assert_allclose(hand["bbox_xyxy"], [300, 250, 380, 330])


# ------------------------------------------------------------------ DexYCB


@pytest.fixture(scope="module")
def dexycb_root(tmp_path_factory):
    """One subject, one sequence (left hand), one camera, two frames (the second without a hand)."""
    root = tmp_path_factory.mktemp("dexycb")
    serial = "836212060125"
    (root / "calibration" / "intrinsics").mkdir(parents=True)
    (root / "calibration" / "intrinsics" / f"{serial}_640x480.yml").write_text(
        "color:\n  fx: 615.5\n  fy: 616.0\n  ppx: 320.5\n  ppy: 240.25\ndepth:\n  fx: 1\n  fy: 1\n  ppx: 0\n  ppy: 0\n")
    seq = root / "20200709-subject-01" / "20200709_141754"
    (seq / serial).mkdir(parents=True)
    (seq / "meta.yml").write_text("num_frames: 2\nycb_ids: [1]\nycb_grasp_ind: 0\nmano_sides:\n- left\nmano_calib:\n- 20200709-subject-01_left\n")
    src, by_name = source_joints(DEXYCB_TOOLKIT_NAMES, 3, seed=2)
    j3 = src * 0.04 + np.array([0, 0, 0.7])
    j2 = j3[:, :2] / j3[:, 2:] * np.array([615.5, 616.0]) + np.array([320.5, 240.25])
    np.savez(seq / serial / "labels_000000.npz", joint_3d=j3[None].astype(np.float32), joint_2d=j2[None].astype(np.float32),
             pose_y=np.zeros((1, 3, 4)), pose_m=np.zeros((1, 51)))
    np.savez(seq / serial / "labels_000001.npz", joint_3d=-np.ones((1, 21, 3), np.float32), joint_2d=-np.ones((1, 21, 2), np.float32))
    for f in range(2):
        write_image(seq / serial / f"color_{f:06d}.jpg", 64, 48)
    return root, j3, by_name


def test_dexycb_order_units_side_camera(dexycb_root):
    root, j3_src, by_name = dexycb_root
    ds = DexYCB(root)
    assert len(ds) == 2
    s = ds[0]
    hand = s["hands"][0]
    for i, name in enumerate(JOINT_NAMES):
        np.testing.assert_allclose(hand["joints_3d"][i], (by_name[name] * 0.04 + np.array([0, 0, 0.7])) * 1000, rtol=1e-6)
    assert hand["handedness"] == "left"
    assert s["camera"] == {"fx": 615.5, "fy": 616.0, "cx": 320.5, "cy": 240.25}
    assert (s["width"], s["height"]) == (640, 480)
    # the stored 2D equals the projection of the stored 3D with the camera
    proj = hand["joints_3d"][:, :2] / hand["joints_3d"][:, 2:] * 615.75 + np.array([320.5, 240.25])
    np.testing.assert_allclose(hand["joints_2d"], proj, atol=0.5)
    assert s["meta"]["serial"] == "836212060125" and s["meta"]["frame"] == 0
    assert ds[1]["hands"] == []


# ------------------------------------------------------------------ COCO-WholeBody


def test_coco_wholebody_hands(tmp_path):
    src, by_name = source_joints(COCO_WB_HAND_NAMES, 2, seed=3)
    kp = np.concatenate([src * 20 + 100, np.full((21, 1), 2.0)], 1)
    kp[4, 2] = 0  # thumb4 unlabelled
    person1 = {"id": 11, "image_id": 7, "category_id": 1, "lefthand_valid": True, "righthand_valid": False,
               "lefthand_kpts": kp.reshape(-1).tolist(), "righthand_kpts": [0.0] * 63,
               "lefthand_box": [80.0, 78.0, 40.0, 44.0], "righthand_box": [0, 0, 0, 0]}
    person2 = {"id": 12, "image_id": 7, "category_id": 1, "lefthand_valid": False, "righthand_valid": True,
               "lefthand_kpts": [0.0] * 63, "righthand_kpts": (kp + np.array([50, 0, 0])).reshape(-1).tolist(),
               "lefthand_box": [0, 0, 0, 0], "righthand_box": [130.0, 78.0, 40.0, 44.0]}
    person3 = {"id": 13, "image_id": 8, "lefthand_valid": False, "righthand_valid": False}
    coco = {"images": [{"id": 7, "file_name": "000000000007.jpg", "width": 320, "height": 240},
                       {"id": 8, "file_name": "000000000008.jpg", "width": 320, "height": 240}],
            "annotations": [person1, person2, person3], "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "coco_wholebody_val_v1.0.json").write_text(json.dumps(coco))
    write_image(tmp_path / "val2017" / "000000000007.jpg", 320, 240)
    ds = CocoWholeBodyHands(tmp_path, "val")
    assert len(ds) == 1  # image 8 has no valid hand
    s = ds[0]
    assert [h["handedness"] for h in s["hands"]] == ["left", "right"]
    left = s["hands"][0]
    for i, name in enumerate(JOINT_NAMES):
        if name == "thumb4":
            assert np.isnan(left["joints_2d"][i]).all()
        else:
            np.testing.assert_allclose(left["joints_2d"][i], by_name[name] * 20 + 100, err_msg=name)
    np.testing.assert_allclose(left["bbox_xyxy"], [80, 78, 120, 122])  # xywh -> xyxy
    assert s["camera"] is None and left["joints_3d"] is None and s["meta"]["annotation_ids"] == [11, 12]


# ------------------------------------------------------------------ HInt


def test_hint_released_layout(tmp_path):
    src, by_name = source_joints(COCO_WB_HAND_NAMES, 2, seed=4)
    folder = tmp_path / "TEST_newdays_img"
    name = "ND_abc_frame000101_l"
    write_image(folder / f"{name}.jpg", 96, 64)
    occl = [0] * 21
    occl[8] = 1
    (folder / f"{name}.json").write_text(json.dumps([{"keypoints": (src * 10 + 40).tolist(), "bbox": [[20.0, 25, 60, 55]],
                                                     "occlusion": occl}]))
    name_r = "EK_0001_P01_frame_0000000042_r"
    write_image(tmp_path / "TEST_epick_img" / f"{name_r}.jpg", 96, 64)
    (tmp_path / "TEST_epick_img" / f"{name_r}.json").write_text(json.dumps([{"keypoints": (src * 10 + 40).tolist(),
                                                                          "bbox": [20.0, 25, 60, 55], "occlusion": [0] * 21}]))
    (tmp_path / "TEST_newdays_img" / "orphan.json").write_text("[]")  # no image: not a sample
    ds = HInt(tmp_path, "test")
    assert len(ds) == 2
    by_subset = {s["meta"]["subset"]: s for s in ds}
    nd = by_subset["TEST_newdays_img"]["hands"][0]
    assert nd["handedness"] == "left" and by_subset["TEST_epick_img"]["hands"][0]["handedness"] == "right"
    for i, jn in enumerate(JOINT_NAMES):
        np.testing.assert_allclose(nd["joints_2d"][i], by_name[jn] * 10 + 40)
    assert nd["occluded"].tolist() == [i == 8 for i in range(21)]
    np.testing.assert_allclose(nd["bbox_xyxy"], [20, 25, 60, 55])
    assert (by_subset["TEST_newdays_img"]["width"], by_subset["TEST_newdays_img"]["height"]) == (96, 64)


def test_hamer_npz(tmp_path):
    write_image(tmp_path / "img" / "a_r.jpg", 80, 60)
    kp = np.concatenate([np.random.default_rng(5).uniform(10, 50, (1, 21, 2)), np.ones((1, 21, 1))], -1)
    kp[0, 3, 2] = 0
    np.savez(tmp_path / "TEST_newdays_img_all.npz", imgname=np.array(["a_r.jpg"]), center=np.array([[30.0, 30]]),
             scale=np.array([40.0]), right=np.array([0.0]), hand_keypoints_2d=kp)
    s = HamerNpz(tmp_path / "TEST_newdays_img_all.npz", tmp_path / "img")[0]
    h = s["hands"][0]
    assert h["handedness"] == "left"
    assert np.isnan(h["joints_2d"][3]).all() and np.allclose(h["joints_2d"][4], kp[0, 4, :2])
    np.testing.assert_allclose(h["bbox_xyxy"], [10, 10, 50, 50])


# ------------------------------------------------------------------ derived_annotations.json writer


def test_as_eval_annotations_round_trips_through_eval(freihand_root, ho3d_root, tmp_path):
    from handos.eval.run import evaluate, load_annotations
    from handos.io.schema import Hand

    root, xyz, _ = freihand_root
    out = FreiHAND(root, "training").as_eval_annotations(tmp_path / "fh" / "derived_annotations.json", limit=3)
    ann = load_annotations(out)
    assert len(ann["images"]) == 3 and ann["joint_order"] == list(JOINT_NAMES)
    im = ann["images"][1]
    assert (out.parent / im["file"]).resolve() == (root / "training" / "rgb" / "00000001.jpg").resolve()
    np.testing.assert_allclose(im["hands"][0]["joints_3d"], xyz[1] * 1000, atol=1e-3)

    class Oracle:
        """Returns the GT as predictions (metres)."""

        def __init__(self):
            self.i = 0

        def predict_batch(self, images, cameras=None):
            out_ = []
            for _ in images:
                h = ann["images"][self.i]["hands"][0]
                j2, j3 = np.asarray(h["joints_2d"], float), np.asarray(h["joints_3d"], float) / 1000
                out_.append([Hand(0, 1.0, "right", 1.0, np.zeros(4), j2, np.ones(21), j3, j3[0])])
                self.i += 1
            return out_

    rep = evaluate(ann, Oracle(), out.parent)
    assert rep["recall"] == 1.0 and rep["pck2d@0.05"] == 1.0 and rep["handedness_acc"] == 1.0
    assert rep["pa_mpjpe_mm"] < 0.01 and rep["root_depth_err_mm"] < 0.01

    # unlabelled joints become null; samples without hands are left out
    ho = HO3D(ho3d_root[0], "evaluation")
    p = ho.as_eval_annotations(tmp_path / "ho" / "derived_annotations.json")
    doc = json.loads(p.read_text())
    hand = doc["images"][0]["hands"][0]
    assert hand["joints_2d"][1] is None and hand["joints_2d"][0] is not None and hand["joints_2d_visible"][0] is True
    assert hand["bbox_xyxy"] == [300, 250, 380, 330]  # one joint: the dataset's box is kept
    assert len(json.loads(HO3D(ho3d_root[0], "train").as_eval_annotations(tmp_path / "t" / "a.json").read_text())["images"]) == 1
    with pytest.raises(KeyError):
        write_eval_annotations([{"image_path": "x.jpg", "width": 1, "height": 1, "hands": [{}]}], tmp_path / "bad.json", "x")
