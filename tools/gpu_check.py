"""One prepared run of every check that needs a GPU: CUDA parity, latency, batch throughput, training.

Made for the lent device machine (15 minutes in all, one command of at most 10): it needs only what that
machine has (torch with CUDA, numpy, opencv-python-headless, safetensors, scipy, tqdm, pillow), writes one
JSON file as it goes (a section that fails records its error and the rest still runs) and prints it.

    # here: copy the real set the run needs into the git-ignored payload folder, then carry it
    mkdir -p device_payload/realdata && cp -r $HANDOS_REALDATA/ge2019_realworld device_payload/realdata/
    # there (the device tool's `run`, carry ["device_payload"]):
    python3 tools/gpu_check.py --realdata device_payload/realdata --out $OUT/gpu_check.json

Sections (all on the same images, CPU reference in the same process):
  parity      raw outputs of both ported nets, CUDA float32 / float16 vs CPU float32 (max relative error)
  pipeline    full pipeline CUDA vs CPU: same hands, max 2D keypoint and 3D joint differences
  latency     CUDA batch-1 end-to-end latency per image (decoded images, median over the set)
  throughput  CUDA images/s at batch 16, 64 and 256 (decoded images, model only)
  train       `handos train` of the shipped config on CUDA (AMP): seconds for `--train-steps` steps, then
              ge2019 PA-MPJPE / PCK with the weights it made (the model card's "minutes on a GPU")
  finetune    `handos train --finetune` of the ge2019 set (`--foundation landmark`, default steps) on the
              device: seconds and the held-out before/after (the README's CPU figures' GPU counterpart)
`--device cpu` runs the same script on the CPU (a smoke test of the script itself).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the device machine runs from a bare checkout, without `pip install -e .`


def _annotations(realdata: Path, limit: int) -> tuple[dict, Path]:
    """The ge2019 annotations (first `limit` images) and their file's path."""
    from handos.eval.run import load_annotations

    ann_path = realdata / "ge2019_realworld" / "derived_annotations.json"
    ann = load_annotations(ann_path)
    ann["images"] = ann["images"][:limit]
    return ann, ann_path


def _images(ann: dict, ann_path: Path) -> list:
    """The annotated images, decoded (LoadedImage)."""
    from handos.io.images import load_image

    return [load_image(ann_path.parent / im["file"]) for im in ann["images"]]


def _sync(device: str) -> None:
    """Wait for queued CUDA work (no-op on the CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def check_parity(images: list, device: str) -> dict:
    """Both nets' raw outputs on `device` (float32 and float16) against the CPU in float32."""
    import torch

    from handos.foundation import Foundation
    from handos.foundation.nets import load_landmark_net, load_palm_detector
    from handos.foundation.palm import letterbox_rois
    from handos.foundation.pipeline import LANDMARK_SIZE, PALM_SIZE, _Images

    cpu = Foundation.load("cpu")
    rgbs = [im.rgb for im in images]
    imgs = _Images(rgbs, torch.device("cpu"))
    idx = torch.arange(len(rgbs))
    lb, _ = letterbox_rois(imgs.sizes, PALM_SIZE)
    palm_in = imgs.crop(idx, lb, PALM_SIZE, "zero", True) / 255.0  # (B,3,192,192)
    fout = cpu.detect(rgbs)
    lm_in = imgs.crop(fout.image_index.cpu(), fout.roi.double().cpu(), LANDMARK_SIZE, "replicate", True) / 255.0
    ref_palm = load_palm_detector("cpu")(palm_in)
    ref_lm = load_landmark_net("cpu")(lm_in)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.float().cpu(), b.float().cpu()
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))

    out = {}
    for dtype in (torch.float32, torch.float16):
        palm = load_palm_detector(device, dtype)(palm_in.to(device, dtype))
        lm = load_landmark_net(device, dtype)(lm_in.to(device, dtype))
        name = str(dtype).replace("torch.", "")
        out[name] = {"palm_regressors": rel(palm[0], ref_palm[0]), "palm_scores": rel(palm[1], ref_palm[1]),
                     **{f"landmark_{k}": rel(lm[k], ref_lm[k]) for k in ("landmarks", "presence", "handedness", "world")},
                     "landmarks_max_px": float((lm["landmarks"].float().cpu() - ref_lm["landmarks"])[..., :2].abs().max())}
    out["crops"] = int(lm_in.shape[0])
    return out


def check_pipeline(images: list, device: str) -> dict:
    """Full pipeline on `device` vs the CPU: hands per image, max keypoint (px) and 3D joint (mm) differences."""
    import numpy as np

    import handos

    cpu, dev = handos.load(device="cpu"), handos.load(device=device)
    same, kp, j3 = 0, 0.0, 0.0
    for im in images:
        a, b = cpu(im), dev(im)
        if len(a) == len(b):
            same += 1
            for ha, hb in zip(a, b):
                kp = max(kp, float(np.abs(ha.keypoints_2d - hb.keypoints_2d).max()))
                j3 = max(j3, 1e3 * float(np.abs(ha.joints_3d - hb.joints_3d).max()))
    return {"images": len(images), "same_hand_count": same, "max_keypoint_diff_px": kp, "max_joint3d_diff_mm": j3}


def check_latency(images: list, device: str) -> dict:
    """Batch-1 end-to-end latency per decoded image on `device` (median and p90, ms)."""
    import handos
    from handos.eval.bench import latency_summary

    model = handos.load(device=device)
    for im in images[:5]:
        model(im)
    times, hands = [], 0
    for im in images:
        _sync(device)
        t = time.perf_counter()
        hands += len(model(im))
        _sync(device)
        times.append(time.perf_counter() - t)
    return latency_summary(times, hands, len(images))  # the bench's own summary: images, hands, median_ms, p90_ms


def check_throughput(images: list, device: str, batch_sizes: tuple[int, ...] = (16, 64, 256)) -> dict:
    """Images/s of predict_batch on `device` at several batch sizes (images decoded beforehand)."""
    import handos

    model = handos.load(device=device)
    out = {}
    for bs in batch_sizes:
        batch = (images * (bs // len(images) + 1))[:bs]
        model.predict_batch(batch)  # warm-up (allocator, cuDNN autotune)
        _sync(device)
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 5.0 or n < 2 * bs:
            model.predict_batch(batch)
            n += bs
        _sync(device)
        out[f"batch_{bs}_images_per_s"] = n / (time.perf_counter() - t)
    return out


def check_train(ann: dict, ann_path: Path, device: str, steps: int) -> dict:
    """Train the shipped config for `steps` steps on `device`, then evaluate the weights it made on ge2019."""
    import handos
    from handos.eval.run import evaluate
    from handos.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        summary = train(REPO / "handos" / "train" / "configs" / "default.toml", progress=False,
                        overrides={"steps": steps, "device": device, "out_dir": tmp, "ckpt_every": max(steps, 1)})
        seconds = time.perf_counter() - t
        model = handos.load(weights=tmp, device=device)
        report = evaluate(ann, model, ann_path.parent)
    keep = ("recall", "pck2d@0.05", "pa_mpjpe_mm", "mpjpe_rr_mm", "root_depth_err_mm", "handedness_acc")
    return {"steps": steps, "seconds": seconds, "seconds_per_step": seconds / max(steps, 1),
            "final_loss_ema": summary.get("loss_ema"), "eval_images": len(ann["images"]),
            **{k: report.get(k) for k in keep}}


def check_finetune(ann_path: Path, device: str, landmark_steps: int, decoder_steps: int, images: int) -> dict:
    """`handos train --finetune` of ge2019's first `images` images (`--foundation landmark`, seed-0 split) on
    `device`: time and held-out before/after."""
    from handos.train.finetune import FinetuneConfig, finetune

    with tempfile.TemporaryDirectory() as tmp:
        ann = json.loads(ann_path.read_text())
        ann["images"] = [dict(im, file=str(ann_path.parent / im["file"])) for im in ann["images"][:images]]
        data = Path(tmp) / "ge2019.json"
        data.write_text(json.dumps(ann))
        t = time.perf_counter()
        report = finetune(FinetuneConfig(data=str(data), out=str(Path(tmp) / "weights"), foundation="landmark",
                                         device=device, landmark_steps=landmark_steps, decoder_steps=decoder_steps),
                          progress=False)
        seconds = time.perf_counter() - t
    keep = ("recall", "pck2d@0.05", "pa_mpjpe_mm", "mpjpe_rr_mm", "root_depth_err_mm")
    return {"steps_by_stage": report["steps_by_stage"], "seconds": seconds, "split": report["split"],
            "before": {k: report["before"].get(k) for k in keep}, "after": {k: report["after"].get(k) for k in keep}}


def main(argv: list[str] | None = None) -> int:
    """Run the sections, writing the JSON after each one."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--realdata", default=str(REPO / "device_payload" / "realdata"),
                   help="folder holding ge2019_realworld/ (a copy of $HANDOS_REALDATA/ge2019_realworld)")
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--images", type=int, default=64, help="ge2019 images to use (parity, pipeline, latency)")
    p.add_argument("--train-steps", type=int, default=2000, help="0 skips training")
    p.add_argument("--eval-images", type=int, default=200, help="ge2019 images the trained weights are scored on")
    p.add_argument("--finetune-steps", default="500,1500",
                   help="LANDMARK,DECODER steps of the ge2019 fine-tuning section (the defaults); 0,0 skips it")
    p.add_argument("--finetune-images", type=int, default=200, help="ge2019 images the fine-tuning section uses")
    p.add_argument("--skip", default="", help="comma list of sections to skip")
    args = p.parse_args(argv)
    import torch

    results: dict = {"device": args.device, "torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        results["error"] = "CUDA is not available on this machine"
        print(json.dumps(results, indent=1))
        return 1
    ann, ann_path = _annotations(Path(args.realdata), max(args.images, args.eval_images))
    images = _images({"images": ann["images"][:args.images]}, ann_path)
    eval_ann = {**ann, "images": ann["images"][:args.eval_images]}
    skip = set(filter(None, args.skip.split(",")))
    sections = {
        "parity": lambda: check_parity(images[:16], args.device),
        "pipeline": lambda: check_pipeline(images, args.device),
        "latency": lambda: check_latency(images, args.device),
        "throughput": lambda: check_throughput(images, args.device),
        "train": lambda: check_train(eval_ann, ann_path, args.device, args.train_steps),
        "finetune": lambda: check_finetune(ann_path, args.device, ft_steps[0], ft_steps[1], args.finetune_images),
    }
    ft_steps = [int(v) for v in args.finetune_steps.split(",")]
    for name, run in sections.items():
        if name in skip or (name == "train" and args.train_steps <= 0) or (name == "finetune" and not any(ft_steps)):
            continue
        t = time.perf_counter()
        try:
            results[name] = run()
        except Exception as err:  # keep the other sections' figures
            results[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-2000:]}
        results[name]["section_seconds"] = round(time.perf_counter() - t, 1)
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
