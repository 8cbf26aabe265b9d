"""Demo pieces that need no server: figures, exports, hand selection, errors, the app's options."""
from __future__ import annotations

import base64

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pytest
import trimesh

from demo import callbacks, colors, export, figures, overlays
from handos.errors import InputError
from handos.io.schema import Hand, prediction_record

# a tetrahedron: enough to check that faces and vertices travel intact
TET_V = np.array([[0, 0, 0], [0.02, 0, 0], [0, 0.02, 0], [0, 0, 0.02]], dtype=np.float64)
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int64)


def make_hand(i: int, side: str, score: float, z: float = 0.5) -> Hand:
    """A hand with a straight-finger skeleton at depth z (metres) and a tetrahedron mesh."""
    rng = np.random.default_rng(i)
    joints = np.array([0.1 * i, 0.0, z]) + rng.normal(0, 0.03, size=(21, 3))
    return Hand(id=i, score=score, handedness=side, handedness_score=0.9, bbox_xyxy=np.array([10.0, 20, 110, 140]),
                keypoints_2d=rng.uniform(0, 100, size=(21, 2)), keypoints_score=np.ones(21), joints_3d=joints,
                cam_t=joints[0], vertices=TET_V + joints[0])


def faces_for(side: str) -> np.ndarray:
    """The tetrahedron for either hand."""
    return TET_F


def test_select_hands_threshold_order_and_limit():
    hands = [make_hand(0, "right", 0.4), make_hand(1, "left", 0.9), make_hand(2, "right", 0.7)]
    kept = callbacks.select_hands(hands, 0.5, 8)
    assert [h.id for h in kept] == [1, 2]
    assert [h.id for h in callbacks.select_hands(hands, 0.0, 1)] == [1]
    rows = callbacks.hands_table(kept)
    assert rows[0][:3] == [1, "left", 0.9] and rows[0][4:] == [10.0, 20.0, 110.0, 140.0]


def test_figure_is_metric_camera_frame_with_overlay_colours():
    hands = [make_hand(0, "right", 0.9), make_hand(1, "left", 0.8)]
    fig = figures.hands_figure(hands, faces_for)
    go.Figure(fig.to_plotly_json())  # the figure is built unvalidated for speed: Plotly must accept it
    meshes = [t for t in fig.data if t.type == "mesh3d"]
    lines = [t for t in fig.data if t.type == "scatter3d"]
    assert len(meshes) == 2 and len(lines) == 10  # a mesh and 5 finger chains per hand
    assert fig.layout.scene.aspectmode == "data"
    assert fig.layout.scene.camera.up.y == -1  # image y points down
    assert np.allclose(np.asarray(meshes[0].x), hands[0].vertices[:, 0])
    assert list(meshes[0].i) == list(TET_F[:, 0])
    finger_css = {colors.css(c) for c in colors.finger_colors()}
    assert {t.line.color for t in lines} == finger_css  # the overlay's finger palette
    assert meshes[0].color != meshes[1].color  # right and left differ
    chain = figures.finger_chains()
    assert chain[1] == [0, 5, 6, 7, 8]
    assert np.allclose(np.asarray(lines[1].z), hands[0].joints_3d[chain[1], 2])


def test_empty_figure_says_no_hands():
    fig = figures.hands_figure([], None)
    go.Figure(fig.to_plotly_json())
    assert len(fig.data) == 0 and "no hands" in fig.layout.annotations[0].text


def test_downloads_json_obj_glb(tmp_path):
    hands = [make_hand(0, "right", 0.9), make_hand(1, "left", 0.8)]
    rec = prediction_record("x.jpg", 640, 480, {"fx": 500, "fy": 500, "cx": 320, "cy": 240}, hands, "test",
                            include_vertices=True)
    paths = export.write_downloads(tmp_path, "x", rec, hands, faces_for)
    assert [p.rsplit(".", 1)[-1] for p in paths] == ["json", "obj", "glb"]
    obj = trimesh.load(paths[1], force="scene", process=False, split_objects=True, group_material=False)
    assert len(obj.geometry) == 2
    got = sorted(obj.geometry.values(), key=lambda m: m.vertices[:, 0].mean())
    assert np.allclose(got[0].vertices, hands[0].vertices, atol=1e-6)  # OBJ: camera frame
    glb = trimesh.load(paths[2], force="scene", process=False)
    dumped = sorted(glb.dump(), key=lambda m: m.vertices[:, 0].mean())
    flip = np.array([1.0, -1.0, -1.0])
    assert np.allclose(dumped[1].vertices, hands[1].vertices * flip, atol=1e-6)  # GLB: glTF y up
    assert len(dumped[1].faces) == 4


def test_downloads_without_meshes_give_only_json(tmp_path):
    hand = make_hand(0, "right", 0.9)
    hand.vertices = None
    rec = prediction_record("x.jpg", 64, 64, {"fx": 50, "fy": 50, "cx": 32, "cy": 32}, [hand], "test")
    assert [p.rsplit(".", 1)[-1] for p in export.write_downloads(tmp_path, "x", rec, [hand], faces_for)] == ["json"]


def test_errors_become_one_line_gr_errors():
    @callbacks.user_errors
    def bad_input():
        raise InputError("x.jpg: broken or truncated image")

    @callbacks.user_errors
    def crash():
        raise KeyError("line one\nline two")

    with pytest.raises(gr.Error) as err:
        bad_input()
    assert err.value.message == "x.jpg: broken or truncated image"
    with pytest.raises(gr.Error) as err:
        crash()
    assert "\n" not in err.value.message and "KeyError" in err.value.message


def test_layers_from_names():
    assert overlays.Layers.from_names(["mesh", "boxes"]) == overlays.Layers(boxes=True, skeleton=False, labels=False, mesh=True)
    assert overlays.Layers.from_names(None) == overlays.Layers(False, False, False, False)


def test_webcam_data_url_becomes_a_file():
    from gradio.data_classes import ImageData

    from demo.components import image_input

    png = base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode()
    path = image_input().preprocess(ImageData(url=f"data:image/png;base64,{png}"))
    assert path.endswith(".png") and open(path, "rb").read().startswith(b"\x89PNG")


def test_app_binds_loopback_unless_told(monkeypatch):
    import app

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = app.parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9000")
    args = app.parse_args([])
    assert args.host == "0.0.0.0" and args.port == 9000
    assert app.parse_args(["--host", "::1", "--port", "1234"]).port == 1234


def test_cuda_refused_without_gpu(monkeypatch):
    import torch

    from demo import models
    from handos.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match="CUDA is not available"):
        models.resolve_device("cuda")


def test_scene_ranges_hold_all_points_with_a_minimum_span():
    hands = [make_hand(0, "right", 0.9), make_hand(1, "left", 0.8)]
    for h in hands:
        h.joints_3d[:, 2] = 0.5  # flat in depth
        h.vertices[:, 2] = 0.5
    ranges = figures.scene_ranges(hands)
    pts = np.concatenate([np.concatenate([h.joints_3d, h.vertices]) for h in hands])
    for axis, (lo, hi) in enumerate(ranges):
        assert lo < pts[:, axis].min() and hi > pts[:, axis].max()
        assert hi - lo >= figures.MIN_SPAN_M - 1e-9
    assert abs(sum(ranges[2]) / 2 - 0.5) < 1e-9  # centred on the data
    assert figures.scene_ranges([]) is None


def test_example_order_matches_the_generator_scenes(monkeypatch):
    """demo.layout's example order lists the scenes of tools/make_examples.py (loaded by path: tools/ is no package)."""
    import importlib.util
    import sys
    from pathlib import Path

    from demo.layout import EXAMPLE_ORDER

    path = Path(__file__).resolve().parents[1] / "tools" / "make_examples.py"
    spec = importlib.util.spec_from_file_location("make_examples", path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_examples", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    assert tuple(mod.SCENES) == EXAMPLE_ORDER
