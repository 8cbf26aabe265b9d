"""Measure MediaPipe Hands' errors on the real development sets and write `error_stats.json`.

Three stages (MediaPipe lives in its own virtualenv, made by .ci/setup_mediapipe_venv.sh); REALDATA is the
folder of the real development sets (default: $HANDOS_REALDATA):

1. dump (run with the MediaPipe venv; needs only mediapipe, numpy, opencv):
   .venv-mediapipe/bin/python tools/measure_errors.py dump --realdata REALDATA --out runs/mediapipe_dump.json
2. stats (run with the project venv):
   .venv/bin/python tools/measure_errors.py stats --dump runs/mediapipe_dump.json \
       --realdata REALDATA --out handos/data/error_stats.json

3. wrist (project venv): the wrist-convention fit used as DecoderConfig.wrist_shift:
   .venv/bin/python tools/measure_errors.py wrist --realdata REALDATA

The dump holds MediaPipe's outputs only (never images or ground truth) and is not committed.
The stats are small numbers (per-joint means/stds) used by `handos/data/error_model.py`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np

from handos.geometry import procrustes_align, similarity_transform

SETS = ["ge2019_realworld", "interhand26m", "freihand", "onehand10k", "panoptic", "rhd"]
# MediaPipe's landmark order equals ours (wrist, thumb cmc..tip, index mcp..tip, ...).


def run_dump(realdata: Path, out: Path) -> None:
    """Run MediaPipe Hands (static images, 2 hands, complexity 1) on every set; write raw outputs."""
    import cv2
    import mediapipe as mp

    hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                                     min_detection_confidence=0.5)
    result: dict[str, list] = {}
    for name in SETS:
        ann_path = realdata / name / "derived_annotations.json"
        if not ann_path.exists():
            continue
        ann = json.loads(ann_path.read_text())
        rows = []
        for img in ann["images"]:
            bgr = cv2.imread(str(realdata / name / img["file"]))
            h, w = bgr.shape[:2]
            res = hands.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            dets = []
            for k, lm in enumerate(res.multi_hand_landmarks or []):
                pts = np.array([[p.x * w, p.y * h, p.z * w] for p in lm.landmark])  # px, z in px units of x
                world = np.array([[p.x, p.y, p.z] for p in res.multi_hand_world_landmarks[k].landmark])
                cls = res.multi_handedness[k].classification[0]
                dets.append({"landmarks_px": pts.round(3).tolist(), "world_m": world.round(5).tolist(),
                             "label": cls.label, "score": float(cls.score)})
            rows.append({"file": img["file"], "width": w, "height": h, "hands": dets})
        result[name] = rows
        print(name, len(rows), "images", sum(len(r["hands"]) for r in rows), "detections")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result))


def _match(gt_list: list[np.ndarray], det_list: list[np.ndarray]) -> list[tuple[int, int]]:
    """Hungarian match on mean 2D distance, gated at 0.5 x max side of the GT joint box."""
    from scipy.optimize import linear_sum_assignment

    if not gt_list or not det_list:
        return []
    cost = np.zeros((len(gt_list), len(det_list)))
    for i, g in enumerate(gt_list):
        ok = ~np.isnan(g[:, 0])
        for j, d in enumerate(det_list):
            cost[i, j] = np.linalg.norm(g[ok] - d[ok, :2], axis=-1).mean()
    rows, cols = linear_sum_assignment(cost)
    pairs = []
    for i, j in zip(rows, cols):
        g = gt_list[i][~np.isnan(gt_list[i][:, 0])]
        side = (g.max(0) - g.min(0)).max()
        if cost[i, j] < 0.5 * side:
            pairs.append((i, j))
    return pairs


def compute_stats(dump: dict, realdata: Path) -> dict:
    """Per-joint 2D offsets in the ROI frame, depth scale/noise, world-landmark error, misses."""
    import torch

    from handos.model.geometry import landmark_roi, to_roi_frame

    world_rot: list[float] = []
    d2, dz, dz_gt, world_res, world_scale, conf, rot_err, size_ratio, trunc = [], [], [], [], [], [], [], [], []
    n_gt = n_found = 0
    per_set = {}
    for name, rows in dump.items():
        ann = json.loads((realdata / name / "derived_annotations.json").read_text())
        by_file = {im["file"]: im for im in ann["images"]}
        s_gt = s_found = 0
        for row in rows:
            im = by_file[row["file"]]
            gts = [np.array([[np.nan, np.nan] if p is None else p for p in h["joints_2d"]], float) for h in im["hands"]]
            dets = [np.array(d["landmarks_px"]) for d in row["hands"]]
            pairs = _match(gts, dets)
            s_gt += len(gts)
            s_found += len(pairs)
            for i, j in pairs:
                g2 = gts[i]
                det = dets[j]
                if np.isnan(g2).any():
                    continue
                gt_roi = landmark_roi(torch.tensor(g2[None], dtype=torch.float32))  # (1,5)
                mp_roi = landmark_roi(torch.tensor(det[None, :, :2], dtype=torch.float32))
                # everything in the GT hand's ROI frame (rotation-free, size-normalised)
                g_loc = to_roi_frame(torch.tensor(g2[None], dtype=torch.float32), gt_roi)[0].numpy()
                m_loc = to_roi_frame(torch.tensor(det[None, :, :2], dtype=torch.float32), gt_roi)[0].numpy()
                d2.append(m_loc - g_loc)
                dr = (mp_roi[0, 4] - gt_roi[0, 4]).item()
                rot_err.append(math.atan2(math.sin(dr), math.cos(dr)))
                size_ratio.append((mp_roi[0, 2] / gt_roi[0, 2]).item())
                conf.append(row["hands"][j]["score"])
                w, h = im["width"], im["height"]
                c, s = gt_roi[0, :2].numpy(), gt_roi[0, 2].item()
                trunc.append(float(max(0.0, (s / 2 - c[0]), (c[0] + s / 2 - w), (s / 2 - c[1]), (c[1] + s / 2 - h)) / s))
                hand = im["hands"][i]
                if hand.get("joints_3d") is not None and im.get("camera"):
                    j3 = np.array(hand["joints_3d"], float) / 1000.0  # m
                    f = im["camera"]["fx"]
                    rel_gt = (j3[:, 2] - j3[0, 2]) * f / j3[0, 2]  # px units at the wrist's depth
                    rel_mp = det[:, 2] - det[0, 2]
                    dz.append(rel_mp / s)
                    dz_gt.append(rel_gt / s)
                    wm = np.array(row["hands"][j]["world_m"])
                    wm = wm - wm[0]
                    g = j3 - j3[0]
                    world_scale.append(np.linalg.norm(wm[9]) / np.linalg.norm(g[9]))
                    world_res.append(_rigid_residual_local(wm, g))
                    world_rot.append(_rotation_angle(wm, g))
        per_set[name] = {"gt_hands": s_gt, "found": s_found}
        n_gt += s_gt
        n_found += s_found
    d2 = np.stack(d2)  # (M,21,2)
    dz, dz_gt = np.stack(dz), np.stack(dz_gt)  # (M3,21)
    # depth: MediaPipe rel. depth ~= a * GT rel. depth (both in ROI units); fit a, then residual stats
    a = float((dz[:, 1:] * dz_gt[:, 1:]).sum() / (dz_gt[:, 1:] ** 2).sum())
    z_res = dz - a * dz_gt
    world_res = np.stack(world_res)  # (M3,21,3) m in the GT hand's local frame
    return {
        "source": "MediaPipe Hands 0.10.21 (static_image_mode, max_num_hands=2, model_complexity=1) vs "
                  "derived_annotations.json of the real development sets; measured by tools/measure_errors.py",
        "roi": "landmark_roi() of the GT joints (MediaPipe's landmarks->ROI rule); 2D in units of ROI size, ROI-rotated",
        "per_set": per_set,
        "hands_gt": n_gt, "hands_found": n_found, "miss_rate": 1.0 - n_found / max(n_gt, 1),
        "n_2d": int(d2.shape[0]), "n_3d": int(dz.shape[0]),
        "offset_2d_mean": d2.mean(0).round(5).tolist(),          # (21,2) systematic offset (ROI units)
        "offset_2d_std": d2.std(0).round(5).tolist(),            # (21,2) jitter (ROI units)
        "offset_2d_median_abs": np.median(np.abs(d2 - d2.mean(0)), 0).round(5).tolist(),
        "hand_shift_std": d2.mean(1).std(0).round(5).tolist(),   # (2,) shared (whole-hand) component
        "depth_scale": a,                                        # MediaPipe z / GT relative depth
        "depth_res_mean": z_res.mean(0).round(5).tolist(),       # (21,) ROI units
        "depth_res_std": z_res.std(0).round(5).tolist(),         # (21,)
        "depth_gt_std": dz_gt.std(0).round(5).tolist(),
        "world_scale_mean": float(np.mean(world_scale)), "world_scale_std": float(np.std(world_scale)),
        "world_rot_err_rad_rms": float(np.sqrt(np.mean(np.square(world_rot)))),
        "world_res_mean": world_res.mean(0).round(5).tolist(),   # (21,3) m, hand-local frame
        "world_res_std": world_res.std(0).round(5).tolist(),
        "score_quantiles": np.quantile(conf, [0.05, 0.25, 0.5, 0.75, 0.95]).round(4).tolist(),
        "roi_rot_err_std": float(np.std(rot_err)), "roi_size_ratio_mean": float(np.mean(size_ratio)),
        "roi_size_ratio_std": float(np.std(size_ratio)),
        "truncation_quantiles": np.quantile(trunc, [0.5, 0.9, 0.99]).round(4).tolist(),
    }


def hand_frame(j: np.ndarray) -> np.ndarray:
    """Orthonormal hand-local axes (3,3) rows from wrist->middle1 and index1->pinky1."""
    y = j[9] - j[0]
    y = y / np.linalg.norm(y)
    x = j[17] - j[5]
    x = x - (x @ y) * y
    x = x / np.linalg.norm(x)
    return np.stack([x, y, np.cross(x, y)])


def _rigid_residual_local(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Residual (21,3) of pred after similarity alignment onto gt (scale kept apart), in gt's hand frame."""
    return (procrustes_align(pred, gt) - gt) @ hand_frame(gt).T


def _rotation_angle(pred: np.ndarray, gt: np.ndarray) -> float:
    """Angle (rad) of the rotation that best aligns pred onto gt (both wrist-relative)."""
    _, r, _ = similarity_transform(pred, gt)
    return float(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))


def fit_wrist_shift(realdata: Path, set_name: str = "ge2019_realworld") -> dict:
    """Coefficients (a, b, c) moving our model's wrist so its 5 metacarpal lengths match a real set's medians.

    Output wrist = w + a*(index1-w) + b*(pinky1-w) + c*(thumb1-w) (DecoderConfig.wrist_shift).
    """
    from scipy.optimize import least_squares

    from handos.hand import HandModel

    rest = HandModel().rest_joints.double().numpy() * 1000  # mm
    ks = [1, 5, 9, 13, 17]
    res = {}
    for name in (set_name, "interhand26m"):
        ann = json.loads((realdata / name / "derived_annotations.json").read_text())
        g = np.array([h["joints_3d"] for im in ann["images"] for h in im["hands"] if h.get("joints_3d")])
        res[name] = np.median(np.linalg.norm(g[:, ks] - g[:, :1], axis=-1), 0)
    target = res[set_name]
    sol = least_squares(lambda c: np.linalg.norm(rest[ks] - (rest[0] + c), axis=-1) - target, np.zeros(3))
    basis = np.stack([rest[5] - rest[0], rest[17] - rest[0], rest[1] - rest[0]], 1)
    coef = np.linalg.solve(basis, sol.x)
    shifted = np.linalg.norm(rest[ks] - (rest[0] + sol.x), axis=-1)
    return {"wrist_shift": coef.round(4).tolist(), "offset_mm": sol.x.round(2).tolist(),
            "metacarpals_model_mm": np.linalg.norm(rest[ks] - rest[0], axis=-1).round(1).tolist(),
            "metacarpals_shifted_mm": shifted.round(1).tolist(),
            **{f"metacarpals_{k}_mm": v.round(1).tolist() for k, v in res.items()}}


def main(argv: list[str] | None = None) -> int:
    """CLI: `dump` (MediaPipe venv) or `stats` (project venv)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["dump", "stats", "wrist"])
    ap.add_argument("--realdata", type=Path, default=os.environ.get("HANDOS_REALDATA"),
                    help="folder of the real development sets (default: $HANDOS_REALDATA)")
    ap.add_argument("--dump", type=Path, default=Path("runs/mediapipe_dump.json"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.realdata is None:
        ap.error("no real data: pass --realdata DIR or set HANDOS_REALDATA")
    args.realdata = Path(args.realdata)
    if args.stage == "dump":
        run_dump(args.realdata, args.out or args.dump)
    elif args.stage == "wrist":
        print(json.dumps(fit_wrist_shift(args.realdata)))
    else:
        stats = compute_stats(json.loads(args.dump.read_text()), args.realdata)
        out = args.out or Path(__file__).resolve().parents[1] / "handos" / "data" / "error_stats.json"
        out.write_text(json.dumps(stats, indent=1))
        print(json.dumps({k: v for k, v in stats.items() if not isinstance(v, list)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
