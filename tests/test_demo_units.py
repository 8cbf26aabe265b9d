"""Demo pieces that need no server: figures, exports, hand selection, errors, the app's options."""
from __future__ import annotations

import base64

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pytest
import trimesh

from demo import colors, crops, errors, export, figures, overlays, results
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
    kept = results.select_hands(hands, 0.5, 8)
    assert [h.id for h in kept] == [1, 2]
    assert [h.id for h in results.select_hands(hands, 0.0, 1)] == [1]
    assert results.below_threshold(hands, 0.5) == 1
    rows = results.hands_table(kept)
    assert rows[0][:4] == [1, "left", 0.9, 0.9] and rows[0][4:] == [10.0, 20.0, 110.0, 140.0]


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


def test_empty_figure_says_no_hands_only_after_a_run():
    fig = figures.hands_figure([], None)
    go.Figure(fig.to_plotly_json())
    assert len(fig.data) == 0 and "no hands" in fig.layout.annotations[0].text
    before = figures.hands_figure([], None, empty_text=figures.EMPTY_BEFORE_RUN)
    assert "no hands" not in before.layout.annotations[0].text


def test_legend_has_its_own_band_under_the_scene():
    fig = figures.hands_figure([make_hand(0, "right", 0.9)], faces_for)
    assert fig.layout.scene.domain.y[0] >= figures.LEGEND_BAND > 0
    assert fig.layout.legend.y + 0.05 <= fig.layout.scene.domain.y[0] and fig.layout.legend.yanchor == "bottom"


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
    @errors.user_errors
    def bad_input():
        raise InputError("x.jpg: broken or truncated image")

    @errors.user_errors
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
    assert "mesh" not in overlays.DEFAULT_LAYERS and {"labels", "skeleton"} <= set(overlays.DEFAULT_LAYERS)


def test_errors_in_view_return_the_message_instead_of_raising():
    def crash():
        raise KeyError("secret\nline")

    def bad():
        raise errors.BadUpload("notes.jpg: not an image file")

    seen = []
    on_error = lambda message, err: seen.append((message, type(err).__name__)) or ("cleared", message)  # noqa: E731
    assert errors.errors_in_view(bad, on_error)() == ("cleared", "notes.jpg: not an image file")
    assert errors.errors_in_view(crash, on_error)()[1] == "internal error (KeyError); the server log has the details"
    from demo import events

    out = events.image_failed("notes.jpg: not an image file", errors.BadUpload("x"))
    assert out[0] is None and out[1] is None and out[3] == [] and out[5] == "**Error:** notes.jpg: not an image file"


def test_label_studio_messages_worded_for_the_panel():
    cli = ("cannot reach Label Studio at http://127.0.0.1:9 while listing projects (ConnectError); is the server "
           "running and --ls-url right? Re-run to continue: nothing pushed is lost")
    msg = errors.panel_message(cli)
    assert "--" not in msg and "URL field" in msg and "127.0.0.1" in msg
    key = "k" * 40
    msg = errors.panel_message(f"Label Studio at http://x refused the API key {key} while pushing (HTTP 401); "
                               "set LABEL_STUDIO_API_KEY to the token under Account & Settings", key)
    assert key not in msg and "API key field" in msg and "LABEL_STUDIO_API_KEY" not in msg


def test_label_shows_handedness_confidence_and_marks_unsure():
    sure, unsure = make_hand(0, "right", 0.93), make_hand(1, "left", 0.93)
    sure.handedness_score, unsure.handedness_score = 0.98, 0.545
    assert overlays.hand_label(sure) == "right 0.98"
    assert overlays.hand_label(unsure) == "left? 0.55"
    unsure.track_id = 3
    assert overlays.hand_label(unsure) == "#3 left? 0.55"
    assert results.hands_table([unsure])[0][1:4] == ["left?", 0.545, 0.93]


def test_small_hands_get_thin_strokes():
    rgb = np.zeros((2000, 3000, 3), np.uint8)
    small, big = make_hand(0, "right", 0.9), make_hand(1, "right", 0.9)
    small.bbox_xyxy, big.bbox_xyxy = np.array([0.0, 0, 40, 50]), np.array([0.0, 0, 900, 1000])
    assert overlays.stroke_width(rgb, small) == 1 and overlays.stroke_width(rgb, big) > 3


def test_hand_crops_zoom_each_hand():
    rgb = np.full((480, 640, 3), 90, np.uint8)
    rgb[100:200, 300:380] = 250
    hand = make_hand(0, "right", 0.9)
    hand.bbox_xyxy = np.array([300.0, 100, 380, 200])
    hand.keypoints_2d = np.tile([340.0, 150.0], (21, 1))
    hand.vertices = None
    K = np.array([[500, 0, 320], [0, 500, 240], [0, 0, 1]], np.float64)
    (crop, caption), = crops.hand_crops(rgb, [hand], K, faces_for)
    assert crop.shape == (crops.CROP_PX, 2 * crops.CROP_PX + 4, 3)
    plain = crop[:, : crops.CROP_PX]
    assert plain[crops.CROP_PX // 2, crops.CROP_PX // 2].tolist() == [250, 250, 250]  # the hand fills the middle
    assert caption.startswith("#0 right") and "detection 0.90" in caption


class FakeModel:
    """A model whose detector finds a hand only in the given recall modes."""

    def __init__(self, finds_in):
        from handos.foundation.types import FoundationConfig

        self.foundation = type("F", (), {})()
        self.foundation.config = FoundationConfig()
        self.finds_in = finds_in
        self.calls = []

    def __call__(self, image, camera=None, max_hands=2, score_threshold=0.5):
        mode = self.foundation.config.recall_boost
        self.calls.append((mode, score_threshold))
        return [make_hand(0, "right", 0.3)] if mode in self.finds_in else []


def test_nothing_found_looks_harder_once():
    from demo.models import ModelCache
    from demo.search import find_hands

    base = FakeModel({"search"})
    cache = ModelCache(lambda device: base)
    found = find_hands(cache, None, None, "cpu", "fast", 4)
    assert [a.recall for a in found.attempts] == ["fast", "search"] and len(found.hands) == 1
    assert base.calls == [("fast", 0.0), ("search", 0.0)]  # unthresholded: the demo filters and counts
    assert "looked harder with recall `search`: found 1" in found.note()
    assert base.foundation.config.recall_boost == "fast"  # the shared model is never switched
    assert find_hands(cache, None, None, "cpu", "off", 4).attempts[-1].recall == "off"  # off is exactly MediaPipe
    found = find_hands(ModelCache(lambda device: FakeModel({"fast"})), None, None, "cpu", "fast", 4)
    assert len(found.attempts) == 1 and found.note() == ""


def test_recall_views_share_the_networks():
    from demo.models import with_recall

    base = FakeModel(set())
    view = with_recall(base, "search")
    assert view is not base and view.foundation.config.recall_boost == "search"
    assert base.foundation.config.recall_boost == "fast" and with_recall(base, "fast") is base


def test_device_choices_offer_cuda_only_where_it_exists(monkeypatch):
    import torch

    from demo import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.device_choices() == ["auto", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.device_choices() == ["auto", "cpu", "cuda"]


def test_photos_over_50_mp_are_downscaled(tmp_path):
    from PIL import Image

    from demo.images import DOWNSCALED_PIXELS, load_upload

    path = tmp_path / "phone.jpg"
    Image.new("RGB", (9000, 6000), (120, 90, 60)).save(path, quality=80)  # 54 MP
    up = load_upload(str(path))
    assert up.downscaled and up.original_size == (9000, 6000)
    assert up.image.width * up.image.height <= DOWNSCALED_PIXELS * 1.01
    assert abs(up.image.width / up.image.height - 1.5) < 0.01
    assert "downscaled from 9000x6000 (54 MP)" in up.note()
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 48)).save(small)
    assert not load_upload(str(small)).downscaled and load_upload(str(small)).note() == ""
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(errors.BadUpload, match="notes.jpg"):
        load_upload(str(text))


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
