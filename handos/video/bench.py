"""Clip throughput: frames per second of tracking (ROI carry-over) vs detection on every frame, and end to end."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from handos.video.smoothing import HandSmoother
from handos.video.tracker import HandTracker, TrackerConfig


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, slightly textured (H,W,3) uint8 background (no hands in it)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    base = np.stack([90 + 60 * xx / width, 100 + 40 * yy / height, 120 - 30 * xx / width], -1)
    small = rng.normal(0, 6, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    import cv2

    tex = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + tex, 0, 255).astype(np.uint8)


def cartoon_hand(size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A flat drawn open hand (palm + five fingers), as (rgb, alpha) -- a last-resort bench source."""
    import cv2

    img = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    s = size / 200.0
    skin = (224, 172, 140)
    palm = (np.array([[60, 110], [140, 110], [150, 175], [55, 180]]) * s).astype(np.int32)
    for target in (img, mask):
        col = skin if target is img else 255
        cv2.fillConvexPoly(target, palm, col, cv2.LINE_AA)
        for (x0, y0, x1, y1, w) in ((70, 115, 60, 30, 17), (95, 112, 95, 15, 18), (118, 114, 128, 25, 17),
                                    (138, 122, 155, 50, 15), (60, 160, 22, 110, 18)):
            cv2.line(target, (int(x0 * s), int(y0 * s)), (int(x1 * s), int(y1 * s)), col, int(w * s), cv2.LINE_AA)
    return img, mask.astype(np.float32) / 255.0


def rendered_hand(size: int = 200, left: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """Our hand model, open palm, rendered skin-coloured as (rgb, alpha); None if the renderer is not available."""
    try:
        import torch

        from handos.hand import HandModel
        from handos.render import render_mesh
    except ImportError:
        return None
    try:
        hm = HandModel()
        pose = torch.zeros(1, 16, 3)
        pose[0, 0, 0] = math.pi  # palm towards the camera, fingers up (y down in the camera frame)
        out = hm(pose, None, torch.tensor([left]))
        verts = out.vertices[0].detach().cpu().numpy()  # (V, 3) m, wrist at origin
        verts = verts - verts.mean(0) + np.array([0.0, 0.0, 0.45])
        f = size * 1.2
        K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], np.float64)
        faces = np.asarray(hm.faces_left if left else hm.faces)
        canvas = np.zeros((size, size, 3), np.uint8)
        rgb = np.asarray(render_mesh(canvas, verts, faces, K, color=(224, 172, 140)))
        alpha = (np.abs(rgb.astype(np.int16) - canvas).sum(-1) > 0).astype(np.float32)
        return rgb.astype(np.uint8), alpha
    except Exception:  # the renderer's API is another helper's; a bench must not die on it
        return None


def compose_clip(n_frames: int, patches: Sequence[tuple[np.ndarray, np.ndarray | None]], width: int = 640,
                 height: int = 480, seed: int = 0) -> list[np.ndarray]:
    """Frames with each hand patch (rgb, alpha|None) drifting along its own slow ellipse over a background."""
    bg = background(width, height, seed)
    k = len(patches)
    frames = []
    for t in range(n_frames):
        img = bg.copy()
        for i, (rgb, alpha) in enumerate(patches):
            ph, pw = rgb.shape[:2]
            cx = width * (i + 1) / (k + 1) + 0.08 * width * math.sin(2 * math.pi * t / max(n_frames, 2) + i)
            cy = height / 2 + 0.06 * height * math.cos(2 * math.pi * t / max(n_frames, 2) + i)
            x0, y0 = int(round(cx - pw / 2)), int(round(cy - ph / 2))
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + pw, width), min(y0 + ph, height)
            if xb <= xa or yb <= ya:
                continue
            src = rgb[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float32)
            if alpha is None:
                img[ya:yb, xa:xb] = src.astype(np.uint8)
            else:
                a = alpha[ya - y0:yb - y0, xa - x0:xb - x0, None]
                img[ya:yb, xa:xb] = (a * src + (1 - a) * img[ya:yb, xa:xb]).astype(np.uint8)
        frames.append(img)
    return frames


def default_patches(hands: int, size: int = 200) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], str]:
    """Hand patches for the bench: our rendered hand model if available, else a drawn hand; and the source name."""
    patches = []
    source = "rendered hand model"
    for i in range(hands):
        p = rendered_hand(size, left=bool(i % 2))
        if p is None:
            p, source = cartoon_hand(size), "drawn hand (renderer unavailable)"
        patches.append(p)
    return patches, source


def bench_clip(model, n_frames: int = 60, hands: int = 1, width: int = 640, height: int = 480,
               patches: Sequence[tuple[np.ndarray, np.ndarray | None]] | None = None, end_to_end: bool = True,
               warmup: int = 2) -> dict[str, Any]:
    """Frames/s on a synthetic width x height clip with `hands` hands: ROI tracking, detection every frame, end to end."""
    source = "given patches"
    if patches is None:
        patches, source = default_patches(hands)
    patches = list(patches)[:hands]
    frames = compose_clip(n_frames, patches, width, height)
    device = str(getattr(model, "device", "cpu"))
    # warm up (first calls allocate)
    for f in frames[:warmup]:
        model.predict_batch([f])
    # 1. tracked: the detector only when a hand is missing, smoothing on
    tracker = HandTracker(model, TrackerConfig(max_hands=max(hands, 1)))
    smoother = HandSmoother()
    found = 0
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        hs = smoother(tracker.step(f, i), i / 30.0)
        found += len(hs)
    t_tracked = time.perf_counter() - t0
    # 2. detection on every frame, one frame per call (what a naive per-frame loop does)
    t0 = time.perf_counter()
    found_det = 0
    for f in frames:
        found_det += len(model.predict_batch([f])[0])
    t_detect = time.perf_counter() - t0
    out: dict[str, Any] = {
        "frames": n_frames, "hands": hands, "width": width, "height": height, "device": device, "source": source,
        "fps_tracked": n_frames / t_tracked, "ms_per_frame_tracked": 1000 * t_tracked / n_frames,
        "fps_detect_every_frame": n_frames / t_detect, "ms_per_frame_detect": 1000 * t_detect / n_frames,
        "detector_frames_tracked": tracker.stats.detector_frames, "roi_tracking": tracker.use_rois,
        "hands_found_per_frame_tracked": found / n_frames, "hands_found_per_frame_detect": found_det / n_frames,
    }
    # 3. end to end: read an H.264 file, track, smooth, write JSONL and an annotated H.264 mp4
    if end_to_end:
        from handos.video.clip import process_clip
        from handos.video.writer import VideoWriter

        with tempfile.TemporaryDirectory(prefix="handos-bench-") as tmp:
            src = Path(tmp) / "bench.mp4"
            with VideoWriter(src, fps=30) as w:
                for f in frames:
                    w.write(f)
            s = process_clip(model, src, out_jsonl=Path(tmp) / "p.jsonl", out_video=Path(tmp) / "a.mp4",
                             max_hands=max(hands, 1))
            out["fps_end_to_end"] = s.frames / s.elapsed_s if s.elapsed_s > 0 else math.nan
    return out
