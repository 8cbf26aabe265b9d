"""Synthetic clips with known truth: our hand model moving along a known 3D trajectory, rendered by our rasterizer.

Used by the tracking tests (tracked joints vs the truth) and by `bench_clip` (throughput on a 640x480 clip).
Nothing comes from a data set: the hand is handos.hand.HandModel, the background is procedural.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from handos.io.camera import Camera, default_camera

SKIN = (226, 178, 148)


@dataclass
class SyntheticClip:
    """Frames and the truth behind them."""

    frames: list[np.ndarray]  # T x (H, W, 3) uint8 RGB
    joints_3d: np.ndarray  # (T, k, 21, 3) metres, camera frame (x right, y down, z forward)
    keypoints_2d: np.ndarray  # (T, k, 21, 2) pixels (projection of joints_3d)
    handedness: list[str]  # k
    camera: Camera
    fps: float


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A plain, softly lit wall with mild sensor noise (H, W, 3) uint8; no hands in it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 0.8 + 0.25 * (1 - y / height) - 0.08 * (x / width)
    base = np.array([200, 205, 214], np.float32) * shade[..., None]
    base += rng.normal(0, 3, base.shape).astype(np.float32)
    return np.clip(base, 0, 255).astype(np.uint8)


# (side, pose preset, base rotation axis-angle, base position m): palm to the camera, fingers up at rest
PLACEMENTS = (
    (False, "spread", (0.15, 0.0, 0.1), (-0.11, 0.06, 0.55)),
    (True, "spread", (0.15, 0.0, -0.1), (0.11, 0.06, 0.55)),
)


def synthetic_clip(n_frames: int = 24, hands: int = 1, width: int = 640, height: int = 480, fps: float = 30.0,
                   seed: int = 0, amplitude_m: float = 0.04, cycles: float = 1.0) -> SyntheticClip:
    """Render `hands` (1 or 2) hand-model hands moving smoothly (x/y/z ellipse + a roll), `cycles` loops in the clip."""
    import cv2
    import torch

    from handos.hand import HandModel, axis_angle_to_matrix
    from handos.render import render_mesh

    if not 1 <= hands <= len(PLACEMENTS):
        raise ValueError(f"hands must be 1..{len(PLACEMENTS)}")
    rng = np.random.default_rng(seed)
    cam = default_camera(width, height)
    K = cam.matrix()
    hm = HandModel()
    bg = background(width, height, seed)
    placed = PLACEMENTS[:hands] if hands > 1 else ((False, "spread", (0.15, 0.0, 0.1), (0.0, 0.06, 0.5)),)
    rest = []
    with torch.no_grad():
        for left, preset, _, _ in placed:
            pose = torch.cat([torch.zeros(1, 1, 3), hm.pose_preset(preset)[None]], dim=1)  # (1, 16, 3)
            out = hm(pose, None, torch.tensor([left]))
            rest.append((out.vertices[0], out.joints[0], hm.faces_for(left).numpy()))
    frames, j3, k2 = [], [], []
    for t in range(n_frames):
        phase = 2 * math.pi * cycles * t / max(n_frames, 2)
        meshes, jt = [], []
        for (_, _, rot0, pos0), (v, j, faces) in zip(placed, rest):
            pos = np.array(pos0) + amplitude_m * np.array([math.sin(phase), 0.6 * (1 - math.cos(phase)) - 0.3,
                                                            0.4 * math.sin(2 * phase)])
            rot = np.array(rot0) + np.array([0.0, 0.0, 0.25 * math.sin(phase)])
            R = axis_angle_to_matrix(torch.tensor(rot, dtype=torch.float32)[None])[0]  # (3, 3)
            off = torch.tensor(pos, dtype=torch.float32)
            meshes.append(((v @ R.T + off).numpy(), faces, SKIN))
            jt.append((j @ R.T + off).numpy())
        img = render_mesh(bg, meshes, K, alpha=1.0)
        img = cv2.GaussianBlur(img, (0, 0), 0.7)
        img = np.clip(img.astype(np.float32) + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
        jt = np.stack(jt).astype(np.float64)  # (k, 21, 3)
        j3.append(jt)
        uv = jt @ K.T  # (k, 21, 3)
        k2.append(uv[..., :2] / uv[..., 2:3])
    return SyntheticClip(frames=frames, joints_3d=np.stack(j3), keypoints_2d=np.stack(k2),
                         handedness=["left" if p[0] else "right" for p in placed], camera=cam, fps=fps)


def tracking_errors(records: list[dict], clip: SyntheticClip) -> dict[str, float]:
    """Match each frame's predicted hands to the truth (nearest 2D), report recall and mean 2D / 3D errors."""
    e2, e3, e3rr, found, ids = [], [], [], 0, {}
    total = clip.keypoints_2d.shape[0] * clip.keypoints_2d.shape[1]
    for rec in records:
        t = int(rec["frame"])
        if t >= len(clip.frames):
            continue
        for h in rec["hands"]:
            kp = np.asarray(h["keypoints_2d"], np.float64)
            d = np.linalg.norm(clip.keypoints_2d[t] - kp[None], axis=-1).mean(-1)  # (k,)
            i = int(np.argmin(d))
            found += 1
            ids.setdefault(i, set()).add(h.get("track_id"))
            e2.append(float(d[i]))
            j = np.asarray(h["joints_3d"], np.float64)
            e3.append(float(np.linalg.norm(j - clip.joints_3d[t, i], axis=-1).mean()))
            e3rr.append(float(np.linalg.norm((j - j[0]) - (clip.joints_3d[t, i] - clip.joints_3d[t, i, 0]), axis=-1).mean()))
    nan = float("nan")
    return {
        "recall": found / total if total else nan,
        "mean_err_2d_px": float(np.mean(e2)) if e2 else nan,
        "mpjpe_camera_mm": 1000 * float(np.mean(e3)) if e3 else nan,
        "mpjpe_root_relative_mm": 1000 * float(np.mean(e3rr)) if e3rr else nan,
        "ids_per_true_hand": max((len(v) for v in ids.values()), default=0),
    }
