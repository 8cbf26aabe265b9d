"""Clips: streaming frames, ROI tracking with stable ids, One-Euro smoothing, H.264 writing, keyframes.

>>> import handos
>>> from handos.video import process_clip
>>> model = handos.load()
>>> summary = process_clip(model, "clip.mp4", out_jsonl="preds.jsonl", out_video="annotated.mp4",
...                        keyframes_dir="keyframes/")          # smooth=True by default
>>> summary.frames, summary.tracks, summary.jitter_raw_px, summary.jitter_px

CLI: `handos predict clip.mp4 --out preds.jsonl --video-out annotated.mp4 [--no-smooth]`.
Modules: reader (PyAV streaming + validation), tracker (ROI carry-over, ids, handedness votes),
smoothing (One-Euro), writer (H.264 mp4), clip (process_clip, keyframes), synthetic (test clips
with truth), bench (throughput).
"""
from __future__ import annotations

from handos.video.clip import ClipSummary, jitter_px, process_clip, select_keyframes
from handos.video.reader import VIDEO_SUFFIXES, ClipReader, is_clip, probe
from handos.video.smoothing import HandSmoother, OneEuroConfig
from handos.video.tracker import HandTracker, TrackerConfig, Tracks, track_frames
from handos.video.writer import VideoWriter

__all__ = ["ClipSummary", "process_clip", "jitter_px", "select_keyframes", "VIDEO_SUFFIXES", "ClipReader", "is_clip",
           "probe", "HandSmoother", "OneEuroConfig", "HandTracker", "TrackerConfig", "Tracks", "track_frames",
           "VideoWriter"]
