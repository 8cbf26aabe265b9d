"""The torch ports of MediaPipe's palm detector and landmark network (handos.foundation.nets).

Parity: raw outputs of both nets against the tflite files run by LiteRT in the MediaPipe venv
(`.ci/setup_mediapipe_venv.sh` makes it; these tests skip with a reason where it is absent), on
real images from ../shared/realdata/ge2019_realworld, the same float32 input tensors on both sides.
Tolerance, per output tensor over the whole batch: max|torch - tflite| <= 1e-3 * max|tflite| + 1e-6.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from blocked_imports import run_without

from handos.foundation.nets import (
    LANDMARK_WEIGHTS,
    PALM_WEIGHTS,
    LandmarkNet,
    PalmDetector,
    load_landmark_net,
    load_palm_detector,
)

REPO = Path(__file__).resolve().parents[1]
MP_VENV = Path(os.environ.get("HANDOS_MEDIAPIPE_VENV", REPO / ".venv-mediapipe"))
MP_PYTHON = MP_VENV / "bin" / "python"
PARITY_IMAGES = ["00002.jpg", "00005.jpg", "00012.jpg", "00015.jpg"]
RTOL, ATOL = 1e-3, 1e-6


@pytest.fixture(scope="session")
def palm() -> PalmDetector:
    """The palm detector on the CPU, loaded once."""
    return load_palm_detector()


@pytest.fixture(scope="session")
def landmark() -> LandmarkNet:
    """The landmark network on the CPU, loaded once."""
    return load_landmark_net()


@pytest.fixture(scope="session")
def mp_python() -> Path:
    """The MediaPipe venv's python; skip where .ci/setup_mediapipe_venv.sh has not made it."""
    if not MP_PYTHON.exists():
        pytest.skip(f"MediaPipe reference venv not found at {MP_VENV}; run bash .ci/setup_mediapipe_venv.sh")
    return MP_PYTHON


def _letterbox(rgb: np.ndarray, size: int) -> np.ndarray:
    """Keep-aspect resize into size x size with a black border (as MediaPipe's ImageToTensor)."""
    import cv2

    h, w = rgb.shape[:2]
    s = size / max(h, w)
    nh, nw = round(h * s), round(w * s)
    out = np.zeros((size, size, 3), np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def _hand_crop(rgb: np.ndarray, box: list[float], size: int) -> np.ndarray:
    """Axis-aligned square crop around a GT hand box (x2 margin), resized to size x size."""
    import cv2

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1])
    m = np.float32([[size / (2 * half), 0, size / 2 - cx * size / (2 * half)],
                    [0, size / (2 * half), size / 2 - cy * size / (2 * half)]])
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="session")
def parity_inputs(realdata: Path) -> tuple[np.ndarray, np.ndarray]:
    """(palm (N,192,192,3), landmark (N,224,224,3)) float32 NHWC in [0,1] from real images."""
    import cv2

    root = realdata / "ge2019_realworld"
    ann = {Path(im["file"]).name: im for im in json.loads((root / "derived_annotations.json").read_text())["images"]}
    palms, crops = [], []
    for name in PARITY_IMAGES:
        rgb = cv2.cvtColor(cv2.imread(str(root / "images" / name)), cv2.COLOR_BGR2RGB)
        palms.append(_letterbox(rgb, 192))
        crops.append(_hand_crop(rgb, ann[name]["hands"][0]["bbox_xyxy"], 224))
    return np.stack(palms).astype(np.float32) / 255, np.stack(crops).astype(np.float32) / 255


@pytest.fixture(scope="session")
def reference(mp_python: Path, parity_inputs, tmp_path_factory) -> dict[str, np.ndarray]:
    """Raw tflite outputs for parity_inputs, from tools/parity/mp_reference.py in the MediaPipe venv."""
    d = tmp_path_factory.mktemp("mp_ref")
    np.save(d / "palm.npy", parity_inputs[0])
    np.save(d / "lm.npy", parity_inputs[1])
    r = subprocess.run([str(mp_python), str(REPO / "tools" / "parity" / "mp_reference.py"), "nets",
                        "--palm", str(d / "palm.npy"), "--landmark", str(d / "lm.npy"), "--out", str(d / "ref.npz")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(np.load(d / "ref.npz"))


def _to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def _assert_close(name: str, ours: torch.Tensor, ref: np.ndarray) -> float:
    """Check the parity tolerance; return max|a-b| / max|b| for the report."""
    a = ours.detach().cpu().double().numpy().reshape(ref.shape)
    err = float(np.abs(a - ref).max())
    scale = float(np.abs(ref).max())
    assert err <= RTOL * scale + ATOL, f"{name}: max|diff| {err:.3g} > {RTOL} * {scale:.3g} + {ATOL}"
    return err / max(scale, 1e-12)


def test_palm_parity_with_tflite(palm, parity_inputs, reference):
    reg, logits = palm(_to_nchw(parity_inputs[0]))
    rel = [_assert_close("regressors", reg, reference["palm_regressors"]),
           _assert_close("score_logits", logits, reference["palm_scores"])]
    # the images do show hands: the detector must find one in each (not a vacuous comparison)
    assert (torch.sigmoid(logits).amax(dim=(1, 2)) > 0.5).all()
    print(f"palm parity max rel err: regressors {rel[0]:.2e}, scores {rel[1]:.2e}")


def test_landmark_parity_with_tflite(landmark, parity_inputs, reference):
    out = landmark(_to_nchw(parity_inputs[1]))
    rel = {k: _assert_close(k, out[k], reference[f"lm_{k}"]) for k in ("landmarks", "presence", "handedness", "world")}
    assert (out["presence"] > 0.5).all()
    print("landmark parity max rel err: " + ", ".join(f"{k} {v:.2e}" for k, v in rel.items()))


def test_outputs_shapes_and_features(landmark):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    out = landmark(x)
    assert out["landmarks"].shape == (2, 21, 3) and out["world"].shape == (2, 21, 3)
    assert out["presence"].shape == (2,) and out["handedness"].shape == (2,)
    assert out["feature_map"].shape == (2, 1152, 7, 7) and out["features"].shape == (2, 1152)
    # features is the global average of feature_map (the input of the FC heads)
    torch.testing.assert_close(out["features"], out["feature_map"].mean(dim=(2, 3)))
    assert ((out["presence"] >= 0) & (out["presence"] <= 1)).all()


def test_batched_equals_single(palm, landmark):
    g = torch.Generator().manual_seed(1)
    xp, xl = torch.rand(3, 3, 192, 192, generator=g), torch.rand(3, 3, 224, 224, generator=g)
    reg, sc = palm(xp)
    one = [palm(xp[i:i + 1]) for i in range(3)]
    torch.testing.assert_close(reg, torch.cat([o[0] for o in one]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sc, torch.cat([o[1] for o in one]), rtol=1e-4, atol=1e-4)
    out = landmark(xl)
    ones = [landmark(xl[i:i + 1]) for i in range(3)]
    for k in out:
        torch.testing.assert_close(out[k], torch.cat([o[k] for o in ones]), rtol=1e-4, atol=1e-4)


def test_float16_runs_and_stays_close(landmark):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))  # fp16 is slow on CPU
    ref = landmark(x)
    out = load_landmark_net(dtype=torch.float16)(x.half())
    assert out["landmarks"].dtype == torch.float16 and out["feature_map"].dtype == torch.float16
    assert (out["landmarks"].float() - ref["landmarks"])[..., :2].abs().max() < 0.5  # crop px


def test_frozen_and_no_grad(palm, landmark):
    for m in (palm, landmark):
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters()) and all(not b.requires_grad for b in m.buffers())
    x = torch.rand(1, 3, 192, 192, requires_grad=True)
    reg, _ = palm(x)
    assert not reg.requires_grad


def test_bad_input_is_a_clear_error(palm):
    from handos.errors import ModelError

    with pytest.raises(ModelError, match="192"):
        palm(torch.zeros(1, 3, 224, 224))


def test_loading_needs_no_tflite_or_mediapipe():
    run_without(("tflite", "flatbuffers", "mediapipe", "tensorflow", "ai_edge_litert"), (
        "import torch\n"
        "from handos.foundation import load_palm_detector, load_landmark_net\n"
        "r, s = load_palm_detector()(torch.rand(1, 3, 192, 192))\n"
        "o = load_landmark_net()(torch.rand(1, 3, 224, 224))\n"
        "assert r.shape == (1, 2016, 18) and o['landmarks'].shape == (1, 21, 3)\n"
        "assert not any(m.split('.')[0] in ('tflite', 'flatbuffers') for m in sys.modules)\n"
        "print('ok')\n"
    ))


def test_shipped_weights_are_small_and_described():
    for p in (PALM_WEIGHTS, LANDMARK_WEIGHTS):
        assert p.stat().st_size < 8e6, p
    notice = (PALM_WEIGHTS.parent / "NOTICE").read_text()
    assert "Apache" in notice and "palm_detection_full.tflite" in notice and "hand_landmark_full.tflite" in notice


def test_same_padding_matches_tf_formula():
    from handos.foundation.convert import _same_pad

    assert _same_pad(192, 5, 2) == [1, 2]  # TF puts the odd pixel after
    assert _same_pad(112, 3, 2) == [0, 1]
    assert _same_pad(96, 5, 1) == [2, 2]
    assert _same_pad(48, 2, 2) == [0, 0]


def test_converter_reproduces_shipped_weights(tmp_path):
    pytest.importorskip("tflite", reason="the converter needs the tflite dev package")
    wheels = sorted((MP_VENV / "wheels").glob("mediapipe-0.10.21-*.whl"))
    if os.environ.get("HANDOS_MEDIAPIPE_WHEEL"):
        wheels = [Path(os.environ["HANDOS_MEDIAPIPE_WHEEL"])]
    if not wheels:
        pytest.skip(f"no mediapipe 0.10.21 wheel in {MP_VENV / 'wheels'}; run bash .ci/setup_mediapipe_venv.sh")
    from safetensors import safe_open

    from handos.foundation.convert import convert_wheel

    written = convert_wheel(wheels[0], tmp_path)
    assert sorted(p.suffix for p in written.values()) == [".safetensors"] * 2 + [".tflite"] * 2
    for path in written.values():
        shipped = PALM_WEIGHTS.parent / path.name
        if path.suffix == ".tflite":  # the original graphs, for the LiteRT runtime: copied byte for byte
            assert path.read_bytes() == shipped.read_bytes(), path.name
            continue
        with safe_open(str(path), "np") as a, safe_open(str(shipped), "np") as b:
            assert a.metadata() == b.metadata()
            assert sorted(a.keys()) == sorted(b.keys())
            for k in a.keys():
                np.testing.assert_array_equal(a.get_tensor(k), b.get_tensor(k))


@pytest.mark.gpu
def test_cuda_matches_cpu(palm, landmark):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(2)
    xp, xl = torch.rand(4, 3, 192, 192, generator=g), torch.rand(4, 3, 224, 224, generator=g)
    ref_reg, ref_sc = palm(xp)
    ref_lm = landmark(xl)
    p32, l32 = load_palm_detector("cuda"), load_landmark_net("cuda")
    reg, sc = p32(xp.cuda())
    torch.testing.assert_close(reg.cpu(), ref_reg, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(sc.cpu(), ref_sc, rtol=1e-3, atol=1e-2)
    lm = l32(xl.cuda())
    torch.testing.assert_close(lm["landmarks"].cpu(), ref_lm["landmarks"], rtol=1e-3, atol=1e-2)
    # float16 weights and autocast both run and stay close (landmarks within ~1 crop px)
    l16 = load_landmark_net("cuda", torch.float16)
    lm16 = l16(xl.cuda().half())
    assert lm16["landmarks"].dtype == torch.float16
    assert (lm16["landmarks"].float().cpu() - ref_lm["landmarks"])[..., :2].abs().max() < 1.5
    with torch.autocast("cuda", dtype=torch.float16):
        reg_ac, _ = p32(xp.cuda())
        lm_ac = l32(xl.cuda())
    assert torch.isfinite(reg_ac).all()
    assert (lm_ac["landmarks"].float().cpu() - ref_lm["landmarks"])[..., :2].abs().max() < 1.5
