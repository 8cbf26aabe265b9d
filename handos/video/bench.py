"""Clip throughput: frames per second of tracking (ROI carry-over) vs detection on every frame, and end to end."""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from handos.video.smoothing import HandSmoother
from handos.video.tracker import HandTracker, TrackerConfig


def bench_clip(model, n_frames: int = 30, hands: int = 1, width: int = 640, height: int = 480,
               frames: Sequence[np.ndarray] | None = None, end_to_end: bool = True, warmup: int = 2) -> dict[str, Any]:
    """Frames/s on a width x height clip with `hands` hands: ROI tracking, detection on every frame, end to end.

    The clip is our hand model moving over a plain background (handos.video.synthetic), unless `frames` are given.
    """
    source = "given frames"
    if frames is None:
        from handos.video.synthetic import synthetic_clip

        frames = synthetic_clip(n_frames, hands=hands, width=width, height=height).frames
        source = "synthetic: handos.hand.HandModel rendered by handos.render"
    frames = list(frames)
    n_frames, (height, width) = len(frames), frames[0].shape[:2]
    device = str(getattr(model, "device", "cpu"))
    # warm up (first calls allocate)
    for f in frames[:warmup]:
        model.predict_batch([f])
    # 1. tracked (the detector only when a hand is missing, smoothing on) and 2. detection on every frame,
    # one frame per call, INTERLEAVED frame by frame so that load from other processes hits both alike
    tracker = HandTracker(model, TrackerConfig(max_hands=max(hands, 1)))
    smoother = HandSmoother()
    found = found_det = 0
    dt_tracked: list[float] = []
    dt_detect: list[float] = []
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        hs = smoother(tracker.step(f, i), i / 30.0)
        t1 = time.perf_counter()
        found_det += len(model.predict_batch([f])[0])
        t2 = time.perf_counter()
        found += len(hs)
        dt_tracked.append(t1 - t0)
        dt_detect.append(t2 - t1)
    t_tracked, t_detect = sum(dt_tracked), sum(dt_detect)
    out: dict[str, Any] = {
        "frames": n_frames, "hands": hands, "width": width, "height": height, "device": device, "source": source,
        "fps_tracked": n_frames / t_tracked, "ms_per_frame_tracked": 1000 * t_tracked / n_frames,
        "fps_detect_every_frame": n_frames / t_detect, "ms_per_frame_detect": 1000 * t_detect / n_frames,
        "median_ms_tracked": 1000 * float(np.median(dt_tracked)), "median_ms_detect": 1000 * float(np.median(dt_detect)),
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
