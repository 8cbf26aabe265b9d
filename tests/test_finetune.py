"""Fine-tuning (`handos train --finetune`): labels in, a weights folder every entry point loads out.

The quick tests fine-tune on a few hands rendered from our own hand model (written in the
`handos label --export` format) for a handful of steps; the slow one on a few ge2019 images.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from handos.data.labelled import load_labelled, split_images, to_grayscale
from handos.errors import ConfigError
from handos.train.finetune import REPORT_FILE, FinetuneConfig, FinetuneError, finetune

REPORT_KEYS = {"data", "split", "steps", "seconds", "before", "after"}


def _render_export(folder: Path, n: int = 4, size: int = 256) -> Path:
    """n images of one rendered hand each (hand model + rasterizer), written as a COCO-style export with 3D."""
    from handos.geometry import axis_angle_to_matrix, project
    from handos.hand import HandModel
    from handos.io.camera import default_camera
    from handos.render import render_mesh

    hm = HandModel()
    cam = default_camera(size, size)
    K = cam.matrix()
    rng = np.random.default_rng(0)
    images, anns = [], []
    presets = ["spread", "relaxed", "three", "ok"]
    for i in range(n):
        left = bool(i % 2)
        fingers = hm.pose_preset(presets[i % len(presets)])[None]
        out = hm(torch.cat([torch.zeros(1, 1, 3), fingers], 1), None, torch.tensor([left]))
        rot = axis_angle_to_matrix(torch.tensor([[0.2 * i - 0.3, 0.3 - 0.1 * i, 0.2]], dtype=torch.float32))[0]
        pos = torch.tensor([0.0, 0.07, 0.45])
        verts = out.vertices[0] @ rot.T + pos
        joints = out.joints[0] @ rot.T + pos
        bg = np.full((size, size, 3), rng.integers(60, 200, 3), dtype=np.uint8)
        img = render_mesh(bg, [(verts.numpy(), hm.faces_for(left).numpy(), (200, 150, 120))], K, alpha=1.0)
        name = f"hand_{i}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        j2d = project(joints.double(), torch.tensor([cam.fx, cam.fy, cam.cx, cam.cy], dtype=torch.float64)).numpy()
        kpts = np.concatenate([j2d, np.full((21, 1), 2.0)], 1).reshape(-1).tolist()
        lo, hi = j2d.min(0), j2d.max(0)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size, "camera": cam.to_dict()})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [*lo.tolist(), *(hi - lo).tolist()],
                     "keypoints": kpts, "num_keypoints": 21, "handedness": "left" if left else "right",
                     "joints_3d": (joints.numpy() * 1000).tolist()})
    path = folder / "export.json"
    path.write_text(json.dumps({"info": {"description": "rendered test hands"}, "images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "hand"}]}))
    return path


@pytest.fixture(scope="module")
def export_file(tmp_path_factory) -> Path:
    """A small rendered export file."""
    return _render_export(tmp_path_factory.mktemp("export"))


def _small(data: Path, out: Path, **kw) -> FinetuneConfig:
    """A config for a few-step run."""
    base = dict(data=str(data), out=str(out), val_frac=0.25, decoder_steps=3, decoder_batch=4, landmark_steps=3,
                landmark_batch=4, palm_steps=2, palm_batch=2, crops_per_hand=2, views_per_image=2, ckpt_every=1,
                threads=2)
    base.update(kw)
    return FinetuneConfig(**base)


def test_load_labelled_formats(export_file: Path, tmp_path: Path) -> None:
    """Both label formats read into the same hands; the split is seeded and disjoint; grey is three equal channels."""
    data = load_labelled(export_file)
    assert len(data.images) == 4 and data.source == "coco"
    h = data.images[0].hands[0]
    assert h.visible.all() and h.joints_3d is not None and abs(h.joints_3d[0, 2] - 0.45) < 0.1
    derived = {"dataset": "d", "images": [{"file": str(im.path), "width": 256, "height": 256, "camera": im.camera,
                                           "hands": [{"joints_2d": [None, *im.hands[0].joints_2d[1:].tolist()],
                                                      "joints_3d": None}]} for im in data.images]}
    (tmp_path / "d.json").write_text(json.dumps(derived))
    d2 = load_labelled(tmp_path / "d.json")
    assert d2.source == "derived" and not d2.images[0].hands[0].visible[0] and d2.images[0].hands[0].joints_3d is None
    tr, va = split_images(data.images, 0.25, 0)
    assert split_images(data.images, 0.25, 0) == (tr, va) and len(va) == 1 and not set(tr) & set(va)
    g = to_grayscale(np.random.default_rng(0).integers(0, 255, (4, 4, 3), dtype=np.uint8))
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()


def test_finetune_landmark_resumes_and_loads(export_file: Path, tmp_path: Path) -> None:
    """A run stopped by a step limit continues on rerun; DIR loads with handos.load; the landmark net's x, y
    change while its anchored heads (depth, world, presence, handedness) stay close to the original's."""
    import handos
    from handos.foundation.nets import load_landmark_net

    out = tmp_path / "ft"
    cfg = _small(export_file, out, foundation="landmark", lr_landmark=2e-5)  # 3 steps: no time to distil back
    first = finetune(cfg, progress=False, max_steps=2)
    assert first.get("stopped") and (out / ".finetune" / "landmark.pt").exists()
    assert torch.load(out / ".finetune" / "landmark.pt", weights_only=True)["step"] == 2
    report = finetune(cfg, progress=False)
    assert REPORT_KEYS <= set(report) and report["steps"] == 6
    assert report["split"] == {"train": 3, "val": 1}
    saved = json.loads((out / REPORT_FILE).read_text())
    assert REPORT_KEYS <= set(saved) and "pck2d@0.05" in saved["before"] and "pck2d@0.05" in saved["after"]
    steps = [json.loads(line) for line in (out / ".finetune" / "log.jsonl").read_text().splitlines()]
    lm_steps = [r["step"] for r in steps if r.get("stage") == "landmark" and "step" in r]
    assert lm_steps == [1, 2, 3]  # not restarted from 0
    card = (out / "MODEL_CARD.md").read_text()
    assert "Fine-tuning" in card and "before" in card
    model = handos.load(weights=out, device="cpu")
    assert model.version.startswith("handos-finetune-")
    # a tuned landmark net: one more landmark pass on its own landmark ROI, its own 2D reported
    assert json.loads((out / "foundation_config.json").read_text()) == {"landmark_passes": 1}
    assert report["inference"] == {"landmark_passes": 1, "refine_2d": False}
    assert model.foundation.config.landmark_passes == 1 and not model.decoder.config.refine_2d
    assert "1 extra landmark pass" in card
    rec = model.record(str(export_file.parent / "hand_0.jpg"))
    assert rec["model"] == model.version
    # the landmark net in DIR is the fine-tuned one; anchored heads stay near the original
    orig = load_landmark_net("cpu")
    tuned = model.foundation.landmark_net
    from handos.foundation.roi import crop_images_cv2
    from handos.train.finetune import _hand_roi

    hand = load_labelled(export_file).images[1]
    roi = torch.as_tensor(_hand_roi(hand.hands[0].joints_2d)[None])
    rgb = cv2.imread(str(hand.path))[..., ::-1].copy()
    x = crop_images_cv2([rgb], torch.zeros(1, dtype=torch.long), roi, 224) / 255.0
    a, b = orig(x), tuned(x)
    assert not torch.equal(a["landmarks"], b["landmarks"])
    assert (a["world"] - b["world"]).abs().mean() < 0.01  # metres
    assert (a["landmarks"][..., 2] - b["landmarks"][..., 2]).abs().mean() < 3.0  # crop px
    assert abs(float(a["presence"] - b["presence"])) < 0.1 and abs(float(a["handedness"] - b["handedness"])) < 0.1
    # a different run into the same folder is refused, the same one returns the finished report
    assert finetune(cfg, progress=False)["steps"] == 6
    with pytest.raises(FinetuneError):
        finetune(_small(export_file, out, foundation="frozen"), progress=False)


def test_finetune_cli_frozen(export_file: Path, tmp_path: Path, capsys) -> None:
    """`handos train --finetune DATA --out DIR` with the foundation frozen: decoder only, no foundation files in DIR."""
    from handos.cli.train import main

    out = tmp_path / "frozen"
    rc = main(["--finetune", str(export_file), "--out", str(out), "--steps", "3", "--batch-size", "4",
               "--no-progress", "--data-licence", "CC0", "--landmark-passes", "2", "--refine-2d", "off"])
    assert rc == 0
    assert "PCK2D@0.05" in capsys.readouterr().out
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["steps"] == 3 and report["licence"] == "CC0"
    assert (out / "decoder.safetensors").exists() and not (out / "hand_landmark_full.safetensors").exists()
    assert "CC0" in (out / "MODEL_CARD.md").read_text()
    # the inference settings asked for on the command line reach the weights folder and handos.load
    assert report["inference"] == {"landmark_passes": 2, "refine_2d": False}
    assert json.loads((out / "foundation_config.json").read_text()) == {"landmark_passes": 2}
    import handos

    model = handos.load(weights=out, device="cpu")
    assert model.foundation.config.landmark_passes == 2 and not model.decoder.config.refine_2d


def test_finetune_inference_options() -> None:
    """Defaults by mode, explicit choices win, a frozen run inherits the starting weights' settings."""
    lm = FinetuneConfig(data="d", out="o", foundation="landmark")
    assert lm.inference_options(0, True) == (1, False)
    assert FinetuneConfig(data="d", out="o").inference_options(2, False) == (2, False)
    assert FinetuneConfig(data="d", out="o", foundation="all", landmark_steps=0).inference_options(0, True) == (0, True)
    assert FinetuneConfig(data="d", out="o", foundation="landmark", landmark_passes=0,
                          refine_2d=True).inference_options(0, True) == (0, True)
    with pytest.raises(ConfigError):
        FinetuneConfig(data="d", out="o", landmark_passes=7)


@pytest.mark.slow
def test_finetune_all_grayscale_real(realdata: Path, tmp_path: Path) -> None:
    """A few ge2019 images, grey, `--foundation all`: palm detector and landmark net written, DIR loads, metrics finite."""
    import handos

    src = realdata / "ge2019_realworld" / "derived_annotations.json"
    ann = json.loads(src.read_text())
    ann["images"] = [dict(im, file=str(src.parent / im["file"])) for im in ann["images"][:6]]
    data = tmp_path / "ge6.json"
    data.write_text(json.dumps(ann))
    out = tmp_path / "grey"
    report = finetune(_small(data, out, foundation="all", grayscale=True, val_frac=0.34), progress=False)
    assert report["split"] == {"train": 4, "val": 2} and report["grayscale"]
    for k in ("recall", "pck2d@0.05", "pa_mpjpe_mm"):
        assert report["before"][k] is not None and report["after"][k] is not None
    assert (out / "palm_detection_full.safetensors").exists() and (out / "hand_landmark_full.safetensors").exists()
    model = handos.load(weights=out, device="cpu")
    assert model.version.startswith("handos-finetune-ge2019")


def test_weights_folder_foundation_options(tmp_path: Path) -> None:
    """foundation_config.json in a weights folder sets landmark_passes; anything else is a one-line ModelError."""
    from handos.errors import ModelError
    from handos.model.pipeline import folder_foundation_options
    from handos.weights import WEIGHTS_DIR

    assert folder_foundation_options(tmp_path) == {} and folder_foundation_options(WEIGHTS_DIR) == {}
    (tmp_path / "foundation_config.json").write_text('{"landmark_passes": 2}')
    assert folder_foundation_options(tmp_path) == {"landmark_passes": 2}
    for bad, err in (('{"min_presence": 0.1}', ModelError), ("[1", ModelError), ('{"landmark_passes": 9}', ConfigError)):
        (tmp_path / "foundation_config.json").write_text(bad)
        with pytest.raises(err) as e:
            folder_foundation_options(tmp_path)
        assert "\n" not in str(e.value)
