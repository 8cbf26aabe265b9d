"""`process_clip`: stream a clip through the model with tracking and smoothing; write JSONL, mp4, keyframes."""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handos.errors import InputError
from handos.io.camera import Camera
from handos.io.records import RecordWriter, drop_torn_tail, read_records
from handos.io.schema import Hand, prediction_record
from handos.render.overlay import draw_tracked_hands
from handos.video.reader import DEFAULT_MAX_SECONDS, ClipReader, Frame
from handos.video.smoothing import HandSmoother, OneEuroConfig
from handos.video.tracker import HandTracker, TrackerConfig


@dataclass
class ClipSummary:
    """What process_clip did (printed by the CLI as JSON)."""

    path: str
    width: int
    height: int
    fps: float  # the clip's frame rate
    frames: int = 0  # frames processed (one JSONL record each)
    frames_with_hands: int = 0
    hands: int = 0  # hands over all frames
    tracks: int = 0  # distinct track ids
    track_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0  # clip time covered (last frame time + one frame)
    broken_frames: int = 0  # skipped, undecodable
    truncated: bool = False  # stopped at --limit / --max-seconds
    resumed_from: int = 0  # first frame processed in this run (> 0 when an earlier run's JSONL was continued)
    detector_frames: int = 0  # frames where the palm detector ran
    roi_frames: int = 0  # frames served by ROI tracking only
    smoothed: bool = True
    jitter_raw_px: float = math.nan  # mean 2D keypoint acceleration before smoothing (px / processed frame^2)
    jitter_px: float = math.nan  # the same on the written (smoothed) keypoints
    handedness_flips_raw: int = 0  # per-frame label changes within tracks, as the model gave them
    handedness_flips: int = 0  # the same after the per-track vote (what is written)
    elapsed_s: float = 0.0
    frames_per_s: float = 0.0  # processing throughput (decode + model + writing)
    model_frames_per_s: float = 0.0  # model only
    out_jsonl: str | None = None
    out_video: str | None = None
    keyframes: list[int] = field(default_factory=list)
    keyframes_dir: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON-able values (NaN -> None)."""
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class JitterMeter:
    """Online mean 2D keypoint acceleration per track, |k[t+1] - 2k[t] + k[t-1]| averaged over joints (px/frame^2)."""

    def __init__(self) -> None:
        """No history yet."""
        self.hist: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.total = 0.0
        self.count = 0

    def update(self, frame: int, hands: Iterable[Hand]) -> None:
        """Add one frame's tracked hands."""
        for h in hands:
            if h.track_id is None:
                continue
            seq = self.hist.setdefault(h.track_id, [])
            seq.append((frame, np.asarray(h.keypoints_2d, np.float64)))
            del seq[:-3]
            if len(seq) == 3 and seq[2][0] - seq[0][0] == 2:
                acc = seq[2][1] - 2 * seq[1][1] + seq[0][1]  # (21, 2)
                self.total += float(np.linalg.norm(acc, axis=-1).mean())
                self.count += 1

    @property
    def value(self) -> float:
        """The mean so far (NaN before any three consecutive frames of one track)."""
        return self.total / self.count if self.count else math.nan


def jitter_px(records: Iterable[dict[str, Any]]) -> float:
    """Mean 2D keypoint acceleration (px / frame^2) of schema records with frame and track_id (e.g. a JSONL)."""
    meter = JitterMeter()
    for rec in sorted(records, key=lambda r: r["frame"]):
        meter.update(rec["frame"], [Hand.from_dict(h) for h in rec["hands"]])
    return meter.value


class KeyframeSelector:
    """Online keyframe choice: the first frame, then one every `every_s`, plus frames where the tracked hands change."""

    def __init__(self, every_s: float = 1.0, on_change: bool = True, min_gap_s: float = 0.25) -> None:
        """Nothing chosen yet."""
        if not every_s > 0:
            raise InputError(f"keyframe interval must be positive seconds, got {every_s!r}")
        self.every_s, self.on_change, self.min_gap_s = float(every_s), on_change, min_gap_s
        self.last_t = -math.inf
        self.prev_key = None
        self.picked: list[int] = []

    def __call__(self, rec: dict[str, Any]) -> bool:
        """Whether this record's frame is a keyframe (records must come in frame order)."""
        t = float(rec["time_s"] if rec.get("time_s") is not None else rec["frame"] / 30.0)
        key = tuple(sorted((h.get("track_id") if h.get("track_id") is not None else -1, h["handedness"])
                           for h in rec["hands"]))
        changed = self.on_change and self.prev_key is not None and key != self.prev_key and t - self.last_t >= self.min_gap_s
        self.prev_key = key
        if not self.picked or t - self.last_t >= self.every_s or changed:
            self.picked.append(int(rec["frame"]))
            self.last_t = t
            return True
        return False


def select_keyframes(records: Iterable[dict[str, Any]], every_s: float = 1.0, on_change: bool = True,
                     min_gap_s: float = 0.25, max_frames: int | None = None) -> list[int]:
    """Frames worth labelling: the first, then one every `every_s`, plus (if on_change) where the tracked hands change."""
    sel = KeyframeSelector(every_s, on_change, min_gap_s)
    for rec in sorted(records, key=lambda r: r["frame"]):
        sel(rec)
        if max_frames is not None and len(sel.picked) >= max_frames:
            break
    return sel.picked


class KeyframeSaver:
    """Write keyframes as JPEGs plus `keyframes.jsonl` (their records, `file` = the JPEG name) for Label Studio."""

    def __init__(self, clip: str | os.PathLike, out_dir: str | os.PathLike, quality: int = 92) -> None:
        """Create the folder and open keyframes.jsonl."""
        self.clip = os.fspath(clip)
        self.out = Path(os.fspath(out_dir))
        self.out.mkdir(parents=True, exist_ok=True)
        self.stem = Path(self.clip).stem
        self.quality = quality
        self.paths: list[str] = []
        self.manifest = open(self.out / "keyframes.jsonl", "w", encoding="utf-8")

    def save(self, index: int, rgb: np.ndarray, rec: dict[str, Any] | None) -> str:
        """Save one frame (and its record, if any); returns the JPEG path."""
        from PIL import Image

        name = f"{self.stem}_f{index:06d}.jpg"
        Image.fromarray(rgb).save(self.out / name, quality=self.quality)
        self.paths.append(str(self.out / name))
        if rec is not None:
            rec = dict(rec, file=name, source_clip=self.clip)  # file relative to keyframes.jsonl, as manifests are
            self.manifest.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self.manifest.flush()
        return self.paths[-1]

    def close(self) -> None:
        """Close keyframes.jsonl."""
        self.manifest.close()


def _progress_callback(progress, total: int | None) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(update(n_done), close()) for progress=True (tqdm), a callable(done, total), or None/False."""
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc="clip", leave=False)
        return (lambda n: bar.update(1)), bar.close
    if callable(progress):
        return (lambda n: progress(n, total)), (lambda: None)
    if progress not in (None, False) and hasattr(progress, "update"):  # a tqdm-like object
        return (lambda n: progress.update(1)), (lambda: None)
    return (lambda n: None), (lambda: None)


def process_clip(model, path: str | os.PathLike, out_jsonl: str | os.PathLike | None = None,
                 out_video: str | os.PathLike | None = None, smooth: bool = True, max_hands: int = 2,
                 max_seconds: float | None = DEFAULT_MAX_SECONDS, limit: int | None = None, progress=None,
                 camera: Camera | dict | None = None, include_vertices: bool = False,
                 keyframes_dir: str | os.PathLike | None = None, keyframe_every_s: float = 1.0,
                 fps: float | None = None, tracker_config: TrackerConfig | None = None,
                 smoothing: OneEuroConfig | None = None, on_frame: Callable[[dict[str, Any]], None] | None = None,
                 resume: bool = False, video_mesh: bool = False, stride: int = 1) -> ClipSummary:
    """Track and reconstruct the hands of a clip frame by frame; writes JSONL / mp4 / keyframes as it goes.

    With `resume`, an existing `out_jsonl` of this clip is continued after its last complete frame (track ids
    carry on); the annotated video and keyframes then cover the resumed part only. Without it, an existing
    `out_jsonl` is started over.
    `video_mesh` draws the meshes into the annotated video too (slower: one rasterisation per frame).
    `stride` N processes every N-th frame only (N times faster; records keep the clip's frame numbers).
    """
    path = os.fspath(path)
    if max_hands < 1:
        raise InputError(f"max_hands must be at least 1, got {max_hands}")
    last = _last_record(out_jsonl, path) if resume and out_jsonl is not None else None
    start = _start_frame(last, stride)
    reader = ClipReader(path, max_seconds=max_seconds, limit=limit, fps=fps, start_frame=start, warn=False,
                        stride=stride)
    info = reader.info
    summary = ClipSummary(path=path, width=info.width, height=info.height, fps=info.fps, smoothed=bool(smooth),
                          resumed_from=start,
                          out_jsonl=None if out_jsonl is None else os.fspath(out_jsonl),
                          out_video=None if out_video is None else os.fspath(out_video))
    config = tracker_config or TrackerConfig(max_hands=max_hands)
    faces = getattr(model, "faces_for", None) if video_mesh else None
    version = str(getattr(model, "version", "unknown"))
    stats = ClipStats()
    tracking: ClipTracking | None = None
    tick, close_bar = _progress_callback(progress, _frames_to_process(info.frames, limit, stride))
    t_start = time.perf_counter()
    outputs = ClipOutputs(path, keyframes_dir, keyframe_every_s)
    try:
        outputs.open(out_jsonl, out_video, info.fps / stride, fresh=last is None)
        for fr in reader:
            if tracking is None:  # the camera is fixed by the first frame (after rotation)
                smoother = HandSmoother(smoothing) if smooth else None
                tracking = ClipTracking(model, camera, fr.rgb, config, smoother, last, start // stride - 1)
                summary.width, summary.height = tracking.size
            step = fr.index // stride  # the tracker counts processed frames
            raw, hands = tracking.step(fr, step)
            h, w = fr.rgb.shape[:2]
            rec = prediction_record(path, w, h, tracking.camera.to_dict(), hands, version, frame=fr.index,
                                    time_s=fr.time_s, include_vertices=include_vertices)
            outputs.write(fr, rec, hands, faces, tracking.camera)
            if on_frame is not None:
                on_frame(rec)
            outputs.keyframe(fr, rec)
            stats.add(step, raw, hands)
            summary.seconds = fr.time_s + stride / info.fps
            tick(stats.frames)
    finally:
        close_bar()
        outputs.close()
    _fill_summary(summary, stats, tracking, reader, outputs, time.perf_counter() - t_start)
    for msg in summary.warnings:
        warnings.warn(msg, stacklevel=2)
    return summary


def _frames_to_process(frames: int | None, limit: int | None, stride: int) -> int | None:
    """How many frames the run will process (None: unknown), for the progress bar."""
    total = frames if limit is None else min(limit, frames or limit)
    return None if total is None else -(-total // stride)


def _start_frame(last: dict[str, Any] | None, stride: int) -> int:
    """The first frame to process: 0, or the one after the last record written (on the stride's grid)."""
    if last is None:
        return 0
    start = int(last["frame"]) + 1
    return (start + stride - 1) // stride * stride if stride > 1 else start


def _last_record(out_jsonl: str | os.PathLike, clip: str) -> dict[str, Any] | None:
    """The last complete record of `clip` in an earlier run's JSONL (a torn last line is cut off the file)."""
    p = Path(os.fspath(out_jsonl))
    drop_torn_tail(p)
    last = None
    for rec in read_records(p):
        if not isinstance(rec, dict) or rec.get("frame") is None or \
                os.path.realpath(str(rec.get("file"))) != os.path.realpath(clip):
            raise InputError(f"{p} holds records of another input; choose another --out or delete it to start over")
        last = rec
    return last


class ClipTracking:
    """The tracker and smoother of one clip, set up on its first frame (its size fixes the camera)."""

    def __init__(self, model, camera: Camera | dict | None, first_rgb: np.ndarray, config: TrackerConfig,
                 smoother: HandSmoother | None, resume_from: dict[str, Any] | None, resume_step: int) -> None:
        """`smoother` None: no smoothing; `resume_from`: the last record of an earlier run (its tracks live on)."""
        h, w = first_rgb.shape[:2]
        self.size = (w, h)
        self.camera = Camera.from_any(camera, w, h)
        self.tracker = HandTracker(model, config, self.camera)
        if resume_from is not None:
            self.tracker.tracks.seed([Hand.from_dict(x) for x in resume_from["hands"]], resume_step)
        self.smoother = smoother

    def step(self, fr: Frame, step: int) -> tuple[list[Hand], list[Hand]]:
        """(raw tracked hands, smoothed hands) of one frame; `step` counts processed frames."""
        raw = self.tracker.step(fr.rgb, step)
        if self.smoother is None:
            return raw, raw
        hands = self.smoother(raw, fr.time_s)
        self.smoother.drop(set(self.tracker.tracks.tracks))
        return raw, hands


class ClipOutputs:
    """Where a clip's results go as they come: records (JSONL), the annotated video, keyframes."""

    def __init__(self, clip: str, keyframes_dir: str | os.PathLike | None, keyframe_every_s: float) -> None:
        """Nothing open yet; keyframes are chosen only with a `keyframes_dir`."""
        self.clip = clip
        self.keyframes_dir = keyframes_dir
        self.keyframes = KeyframeSelector(keyframe_every_s) if keyframes_dir is not None else None
        self.saver: KeyframeSaver | None = None
        self.records: RecordWriter | None = None
        self.video = None

    def open(self, out_jsonl: str | os.PathLike | None, out_video: str | os.PathLike | None, video_fps: float,
             fresh: bool) -> None:
        """Open the record file and the video asked for; `fresh`: an existing out_jsonl starts over (else appended)."""
        if out_jsonl is not None:
            if fresh:
                Path(out_jsonl).parent.mkdir(parents=True, exist_ok=True)
                open(out_jsonl, "w").close()
            self.records = RecordWriter(os.fspath(out_jsonl), resume=True)
            self.records.open_next()
        if out_video is not None:
            from handos.video.writer import VideoWriter

            self.video = VideoWriter(out_video, fps=video_fps)

    def write(self, fr: Frame, rec: dict[str, Any], hands: list[Hand], faces, camera: Camera) -> None:
        """Write one frame's record and its annotated image."""
        if self.records is not None:
            self.records.write(rec)
        if self.video is not None:
            self.video.write(draw_tracked_hands(fr.rgb, hands, faces, camera.matrix()), fr.time_s)

    def keyframe(self, fr: Frame, rec: dict[str, Any]) -> None:
        """Save the frame for labelling if it is a keyframe."""
        if self.keyframes is not None and self.keyframes(rec):
            self.saver = self.saver or KeyframeSaver(self.clip, self.keyframes_dir)
            self.saver.save(fr.index, fr.rgb, rec)

    def close(self) -> None:
        """Flush and close every output opened."""
        for out in (self.records, self.video, self.saver):
            if out is not None:
                out.close()


class ClipStats:
    """Counts, track ids, handedness flips and jitter over the processed frames."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.frames = self.hands = self.frames_with_hands = 0
        self.flips_raw = self.flips = 0
        self.track_ids: set[int] = set()
        self.last_label: dict[int, tuple[str, str]] = {}  # track -> (raw label, voted label) on its latest frame
        self.raw_meter, self.out_meter = JitterMeter(), JitterMeter()

    def add(self, step: int, raw: list[Hand], hands: list[Hand]) -> None:
        """One processed frame: the raw tracked hands and the written (smoothed) ones."""
        self.raw_meter.update(step, raw)
        self.out_meter.update(step, hands)
        self.frames += 1
        self.hands += len(hands)
        self.frames_with_hands += int(bool(hands))
        self.track_ids.update(x.track_id for x in hands if x.track_id is not None)
        for x in hands:
            if x.track_id is None:
                continue
            labels = ((x.trace.handedness_raw or (x.handedness,))[0], x.handedness)
            prev = self.last_label.get(x.track_id)
            if prev is not None:
                self.flips_raw += int(prev[0] != labels[0])
                self.flips += int(prev[1] != labels[1])
            self.last_label[x.track_id] = labels


def _fill_summary(summary: ClipSummary, stats: ClipStats, tracking: ClipTracking | None, reader: ClipReader,
                  outputs: ClipOutputs, elapsed_s: float) -> None:
    """Copy what the run did into `summary`."""
    summary.frames, summary.hands, summary.frames_with_hands = stats.frames, stats.hands, stats.frames_with_hands
    summary.handedness_flips_raw, summary.handedness_flips = stats.flips_raw, stats.flips
    summary.track_ids = sorted(stats.track_ids)
    summary.tracks = len(stats.track_ids)
    summary.jitter_raw_px = stats.raw_meter.value
    summary.jitter_px = stats.out_meter.value
    summary.elapsed_s = elapsed_s
    summary.frames_per_s = summary.frames / elapsed_s if elapsed_s > 0 else 0.0
    summary.broken_frames = reader.stats.broken
    summary.truncated = reader.stats.truncated
    if tracking is not None:
        ts = tracking.tracker.stats
        summary.detector_frames = ts.detector_frames
        summary.roi_frames = ts.roi_frames
        if ts.seconds_model > 0:
            summary.model_frames_per_s = ts.frames / ts.seconds_model
    if outputs.keyframes is not None:
        summary.keyframes = list(outputs.keyframes.picked)
        summary.keyframes_dir = os.fspath(outputs.keyframes_dir)
    summary.warnings = list(dict.fromkeys(list(reader.info.notes) + reader.stats.notes))
