"""The foundation on LiteRT (handos.foundation.litert / runtime): the runtime choice, fine-tuned folders, and
parity with the torch runtime (raw nets, landmark passes, box prompts, and every real set)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from blocked_imports import run_without

from handos.errors import ConfigError, ModelError
from handos.foundation.runtime import load_nets, resolve_runtime

pytest.importorskip("ai_edge_litert", reason="the LiteRT runtime needs ai-edge-litert (pip install -r requirements.txt)")

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MAX_PX = 0.5  # the bound on landmark differences between runtimes


@pytest.fixture(scope="module")
def models():
    """The full pipeline on each runtime (CPU)."""
    import handos

    return {rt: handos.load(device="cpu", runtime=rt) for rt in ("torch", "litert")}


@pytest.fixture(scope="module")
def ge_images(realdata):
    """Six ge2019 images as RGB arrays."""
    from handos.io.images import load_image

    files = sorted((realdata / "ge2019_realworld" / "images").glob("*.jpg"))[:6]
    return [load_image(f).rgb for f in files]


def test_runtime_choice():
    assert resolve_runtime("auto", CPU) == "litert"
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"  # LiteRT is CPU-only
    assert resolve_runtime("TORCH", CPU) == "torch"
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_runtime("litert", torch.device("cuda"))
    with pytest.raises(ConfigError, match="unknown runtime"):
        resolve_runtime("onnx", CPU)


def test_without_litert_auto_is_torch_and_litert_says_what_to_install(monkeypatch):
    import handos.foundation.litert as lt

    monkeypatch.setattr(lt, "litert_available", lambda: False)
    assert resolve_runtime("auto", CPU) == "torch"
    with pytest.raises(ModelError, match="ai-edge-litert==2.3.0"):
        resolve_runtime("litert", CPU)


def test_core_runs_where_litert_is_absent():
    """With ai_edge_litert unimportable (as on the device machine), handos.load() runs on torch."""
    run_without(("ai_edge_litert",), (
        "import numpy as np, handos\n"
        "from handos.errors import ModelError\n"
        "m = handos.load(device='cpu')\n"
        "assert m.foundation.runtimes == {'palm': 'torch', 'landmark': 'torch'}, m.foundation.runtimes\n"
        "m(np.zeros((64, 64, 3), np.uint8))\n"
        "try:\n"
        "    handos.load(device='cpu', runtime='litert')\n"
        "except ModelError as e:\n"
        "    assert 'pip install ai-edge-litert' in str(e) and '\\n' not in str(e)\n"
        "else:\n"
        "    raise SystemExit('litert without the package loaded')\n"
        "print('ok')\n"
    ))


def test_shipped_tflite_files_are_the_originals():
    """The .tflite files are MediaPipe's, byte for byte (sha256 as the converter wrote them into NOTICE)."""
    from handos.foundation.litert import LANDMARK_TFLITE, PALM_TFLITE

    notice = (PALM_TFLITE.parent / "NOTICE").read_text()
    for path in (PALM_TFLITE, LANDMARK_TFLITE):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{path.name} (the original file)" in notice and digest in notice, path.name


def test_default_load_is_litert_on_cpu(models):
    import handos

    assert handos.load(device="cpu").foundation.runtimes == {"palm": "litert", "landmark": "litert"}
    assert models["torch"].foundation.runtimes == {"palm": "torch", "landmark": "torch"}


def test_raw_nets_match_torch(ge_images):
    """Both nets' outputs on real crops: LiteRT vs the torch replay, batched (B=3) and one by one."""
    from handos.foundation.pipeline import Foundation, _Images

    t_palm, t_lm = load_nets("torch", CPU)
    l_palm, l_lm = load_nets("litert", CPU, threads=2)
    imgs = _Images(ge_images[:3], CPU)
    from handos.foundation.palm import letterbox_rois

    rois, _ = letterbox_rois(imgs.sizes, 192)
    x = imgs.crop(torch.arange(3), rois, 192, "zero", True) / 255.0
    for a, b in zip(t_palm(x), l_palm(x)):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-3 * a.abs().max() + 1e-4
    fnd = Foundation(t_palm, t_lm)
    out = fnd.detect(ge_images[:3])
    crops = imgs.crop(out.image_index, out.roi.double(), 224, "replicate", True) / 255.0
    ta, lb = t_lm(crops), l_lm(crops)
    assert set(lb) == {"landmarks", "presence", "handedness", "world"}
    for k in lb:
        assert ta[k].shape == lb[k].shape
        assert (ta[k] - lb[k]).abs().max() <= 1e-3 * ta[k].abs().max() + 1e-4, k
    one = l_lm(crops[:1])
    torch.testing.assert_close(one["landmarks"], lb["landmarks"][:1])


def test_uint8_crops_give_the_float_inputs_exact_outputs(ge_images):
    """LiteRT nets take OpenCV's uint8 crops (scaled into the input buffer) with bit-identical outputs to the
    float crops in [0,1], one by one and batched; the detector's hands are the same either way; bad arrays are
    refused."""
    from handos.foundation.palm import letterbox_rois
    from handos.foundation.pipeline import Foundation, _Images

    palm, lm = load_nets("litert", CPU, threads=1)
    imgs = _Images(ge_images[:3], CPU)
    rois, _ = letterbox_rois(imgs.sizes, 192)
    idx = torch.arange(3)
    u8 = imgs.net_input(palm, idx, rois, 192, "zero", True)
    assert isinstance(u8, np.ndarray) and u8.dtype == np.uint8 and u8.shape == (3, 192, 192, 3)
    x = imgs.crop(idx, rois, 192, "zero", True) / 255.0
    for a, b in zip(palm(x), palm(u8)):
        assert torch.equal(a, b)
    assert torch.equal(palm(u8[1:2])[0], palm(x)[0][1:2])
    fout = Foundation(palm, lm).detect(ge_images[:3])
    crops_u8 = imgs.net_input(lm, fout.image_index, fout.roi.double(), 224, "replicate", True)
    crops = imgs.crop(fout.image_index, fout.roi.double(), 224, "replicate", True) / 255.0
    a, b = lm(crops), lm(crops_u8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for net in (palm, lm):  # the float path for the same detector gives the same hands
        net.takes_uint8 = False
    plain = Foundation(palm, lm).detect(ge_images[:3])
    assert torch.equal(plain.joints_2d, fout.joints_2d) and torch.equal(plain.score, fout.score)
    with pytest.raises(ModelError, match="uint8 array"):
        palm(np.zeros((1, 192, 192, 3), dtype=np.float32))
    with pytest.raises(ModelError, match="uint8 array"):
        lm(np.zeros((1, 192, 192, 3), dtype=np.uint8))


def test_landmark_passes_and_box_prompts_on_both_runtimes(ge_images):
    """FoundationConfig.landmark_passes and detect_boxes give the same hands on either runtime."""
    from handos.foundation.pipeline import Foundation, FoundationConfig

    cfg = FoundationConfig(landmark_passes=2)
    outs = {rt: Foundation.load(config=cfg, runtime=rt).detect(ge_images) for rt in ("torch", "litert")}
    plain = Foundation.load(runtime="litert").detect(ge_images)
    assert len(outs["torch"]) == len(outs["litert"]) == len(plain) > 0
    assert (outs["torch"].joints_2d - outs["litert"].joints_2d).abs().max() < MAX_PX
    assert (plain.joints_2d - outs["litert"].joints_2d).abs().max() > 1.0  # the passes did run on LiteRT
    assert outs["litert"].features is None and outs["torch"].features is not None
    boxes = [np.asarray(b.box[None].tolist()) for b in (plain.select(plain.image_index == i) for i in range(2))]
    bx = {rt: Foundation.load(runtime=rt).detect_boxes(ge_images[:2], [b.reshape(-1, 4) for b in boxes], refine=2)
          for rt in ("torch", "litert")}
    assert len(bx["torch"]) == len(bx["litert"]) == 2
    assert (bx["torch"].joints_2d - bx["litert"].joints_2d).abs().max() < MAX_PX


def _finetuned_folder(tmp: Path, shift_px: float) -> Path:
    """A weights folder like `handos train --finetune` writes: the shipped decoder and a landmark net whose
    x, y outputs are moved by `shift_px` crop pixels (so its use is visible)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from handos.foundation.nets import LANDMARK_WEIGHTS
    from handos.weights import WEIGHTS_DIR

    for f in ("decoder.safetensors", "decoder_config.json"):
        shutil.copyfile(WEIGHTS_DIR / f, tmp / f)
    with safe_open(str(LANDMARK_WEIGHTS), framework="pt") as f:
        meta = f.metadata()
        params = {k: f.get_tensor(k) for k in f.keys()}
    graph = json.loads(meta["handos.graph"])
    out_name = graph["outputs"]["landmarks"]
    fc = next(op for op in graph["ops"] if op["output"] == out_name)
    bias = params[fc["bias"]].float()
    bias[0::3] += shift_px
    bias[1::3] += shift_px
    params[fc["bias"]] = bias.to(params[fc["bias"]].dtype)
    save_file(params, str(tmp / "hand_landmark_full.safetensors"), metadata=meta)
    return tmp


def test_finetuned_nets_never_run_as_the_original_tflite(tmp_path, ge_images):
    """A folder's fine-tuned landmark net runs on torch under auto (the untouched palm detector on LiteRT), and
    runtime='litert' refuses the folder instead of running the original graph."""
    import handos

    folder = _finetuned_folder(tmp_path, shift_px=8.0)
    tuned = handos.load(weights=folder, device="cpu")
    assert tuned.foundation.runtimes == {"palm": "litert", "landmark": "torch"}
    assert handos.load(weights=folder, device="cpu", runtime="torch").foundation.runtimes == {
        "palm": "torch", "landmark": "torch"}
    with pytest.raises(ModelError, match="fine-tuned net"):
        handos.load(weights=folder, device="cpu", runtime="litert")
    shipped = handos.load(device="cpu", runtime="litert")
    a = shipped.foundation.detect(ge_images[:2])
    b = tuned.foundation.detect(ge_images[:2])
    assert len(a) == len(b) > 0
    moved = (b.joints_2d - a.joints_2d).norm(dim=-1).mean()
    assert moved > 2.0, "the fine-tuned landmark net was not used"


def test_decoder_outputs_agree(models, ge_images):
    """Full pipeline (decoder, mesh) on both runtimes: same hands, keypoints within MAX_PX, 3D within 1 mm."""
    for rgb in ge_images:
        a, b = models["torch"](rgb), models["litert"](rgb)
        assert [h.handedness for h in a] == [h.handedness for h in b]
        for ha, hb in zip(a, b):
            assert np.abs(ha.keypoints_2d - hb.keypoints_2d).max() < MAX_PX
            assert np.abs(ha.joints_3d - hb.joints_3d).max() < 1e-3


SETS = ["freihand", "interhand26m", "onehand10k", "panoptic", "rhd", pytest.param("ge2019_realworld", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", SETS)
def test_same_hands_on_every_real_set(realdata, models, name):
    """Every image of each real set: the same hands (count, handedness) and landmarks within MAX_PX."""
    from handos.eval.run import load_annotations
    from handos.io.images import load_image

    fa, fb = models["torch"].foundation, models["litert"].foundation
    folder = realdata / name
    worst, hands = 0.0, 0
    for im in load_annotations(folder / "derived_annotations.json")["images"]:
        rgb = load_image(folder / im["file"]).rgb
        a, b = fa.detect([rgb]), fb.detect([rgb])
        assert len(a) == len(b), f"{name}/{im['file']}: {len(a)} hands on torch, {len(b)} on LiteRT"
        if len(a):
            assert torch.equal(a.handedness_right >= 0.5, b.handedness_right >= 0.5), im["file"]
            worst = max(worst, float((a.joints_2d - b.joints_2d).abs().max()))
            hands += len(a)
    assert hands > 0 and worst < MAX_PX, worst


@pytest.mark.parametrize("name", SETS)
def test_eval_figures_agree(realdata, models, name):
    """handos eval's figures on each runtime: recall, false positives and handedness identical; PCK within one
    joint's flip (a joint within ~1e-3 px of the threshold may land either side), px within 0.01, mm within 0.1."""
    from handos.eval.run import evaluate, load_annotations

    folder = realdata / name
    ann = load_annotations(folder / "derived_annotations.json")
    ra, rb = (evaluate(ann, models[rt], folder) for rt in ("torch", "litert"))
    joints = sum(1 for im in ann["images"] for h in im["hands"] for j in h["joints_2d"] if j is not None)
    for key in ("recall", "false_positives", "handedness_acc"):
        assert ra.get(key) == rb.get(key), key
    for key in ("pck2d@0.05", "pck2d@0.1"):
        assert abs(ra[key] - rb[key]) <= 1.01 / joints + 1e-4, key
    assert abs(ra["mean_err_2d_px"] - rb["mean_err_2d_px"]) < 0.01
    for key in ("pa_mpjpe_mm", "mpjpe_rr_mm", "root_depth_err_mm"):
        if ra.get(key) is not None:
            assert abs(ra[key] - rb[key]) < 0.1, key


def test_every_entry_point_takes_runtime():
    """--runtime on predict, eval, bench, label, the ML backend and the demo (which hands it to handos.load)."""
    import app
    from annotate import backend, cli
    from handos.cli import bench, eval, predict

    assert predict.build_parser().parse_args(["x.jpg", "--out", "o.jsonl", "--runtime", "torch"]).runtime == "torch"
    assert eval.build_parser().parse_args(["a.json", "--runtime", "litert"]).runtime == "litert"
    assert bench.build_parser().parse_args(["--runtime", "torch"]).runtime == "torch"
    assert cli.build_parser().parse_args(["x.jpg", "--runtime", "torch"]).runtime == "torch"
    assert backend.build_parser().parse_args(["--runtime", "litert"]).runtime == "litert"
    assert app.parse_args(["--runtime", "torch"]).runtime == "torch"
    with pytest.raises(SystemExit):
        eval.build_parser().parse_args(["a.json", "--runtime", "onnx"])


def test_runtime_from_the_environment(monkeypatch):
    """handos.load(runtime=None) reads HANDOS_RUNTIME (how app.py --runtime reaches every model the demo loads)."""
    import handos

    monkeypatch.setenv("HANDOS_RUNTIME", "torch")
    assert handos.load(device="cpu").foundation.runtimes == {"palm": "torch", "landmark": "torch"}
    assert handos.load(device="cpu", runtime="litert").foundation.runtimes["palm"] == "litert"


def test_torch_kept_on_one_thread_only_while_predicting_on_litert(models):
    """With both nets on LiteRT, torch's own CPU work runs on one thread during a prediction (torch's idle OpenMP
    threads would take XNNPACK's cores); torch's setting is restored after, and untouched on the torch runtime."""
    from handos.foundation.runtime import torch_single_threaded

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch_single_threaded():
            assert torch.get_num_threads() == 1
            with torch_single_threaded():  # re-entrant
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with torch_single_threaded(False):
            assert torch.get_num_threads() == 2
        seen = {}
        for rt, m in models.items():
            dstep = m.decode_step()
            real = dstep.infer

            def spy(inp, real=real, rt=rt):  # the decoder call records torch's thread count
                seen[rt] = torch.get_num_threads()
                return real(inp)
            dstep.infer = spy
            try:
                m(np.full((96, 96, 3), 128, np.uint8), boxes=[[20, 20, 70, 70]])
            finally:
                del dstep.infer
            assert torch.get_num_threads() == 2
        assert seen == {"torch": 2, "litert": 1}
    finally:
        torch.set_num_threads(before)
