"""Clips: streaming frames, ROI tracking with stable ids, One-Euro smoothing, H.264 writing, keyframes."""
from __future__ import annotations

from handos.video.clip import ClipSummary, jitter_px, process_clip, select_keyframes
from handos.video.reader import VIDEO_SUFFIXES, ClipReader, is_clip, probe
from handos.video.smoothing import HandSmoother, OneEuroConfig
from handos.video.tracker import HandTracker, TrackerConfig, Tracks, track_frames
from handos.video.writer import VideoWriter

__all__ = ["ClipSummary", "process_clip", "jitter_px", "select_keyframes", "VIDEO_SUFFIXES", "ClipReader", "is_clip",
           "probe", "HandSmoother", "OneEuroConfig", "HandTracker", "TrackerConfig", "Tracks", "track_frames",
           "VideoWriter"]
