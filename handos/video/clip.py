"""`process_clip`: stream a clip through the model with tracking and smoothing; write JSONL, mp4, keyframes."""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from handos.errors import InputError
from handos.io.camera import Camera
from handos.io.schema import BONES, Hand, prediction_record
from handos.video.reader import DEFAULT_MAX_SECONDS, ClipReader, read_frames
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


def save_keyframes(clip: str | os.PathLike, records: list[dict[str, Any]], indices: list[int], out_dir: str | os.PathLike,
                   quality: int = 92, **reader_kwargs) -> list[str]:
    """Re-read the clip and save the chosen frames (with their records from `records`) for Label Studio."""
    by_frame = {int(r["frame"]): r for r in records}
    saver = KeyframeSaver(clip, out_dir, quality)
    try:
        for fr in read_frames(clip, indices, **reader_kwargs):
            saver.save(fr.index, fr.rgb, by_frame.get(fr.index))
    finally:
        saver.close()
    return saver.paths


_DRAW_HANDS: list = []  # the renderer's draw_hands, looked up once (empty list: not looked up yet)


def _draw_hands_fn():
    """handos.render.overlay.draw_hands if that module is there, else None."""
    if not _DRAW_HANDS:
        try:
            from handos.render.overlay import draw_hands
        except ImportError:
            draw_hands = None
        _DRAW_HANDS.append(draw_hands)
    return _DRAW_HANDS[0]


def _draw_skeleton(rgb: np.ndarray, hands: list[Hand]) -> np.ndarray:
    """A plain skeleton overlay (used when the renderer's draw_hands is unavailable)."""
    import cv2

    img = rgb.copy()
    for h in hands:
        kp = np.round(np.asarray(h.keypoints_2d)).astype(np.int32)
        for a, b in BONES:
            cv2.line(img, tuple(map(int, kp[a])), tuple(map(int, kp[b])), (0, 255, 0), 2, cv2.LINE_AA)
        for p in kp:
            cv2.circle(img, tuple(map(int, p)), 3, (255, 255, 255), -1, cv2.LINE_AA)
        x1, y1, x2, y2 = np.round(np.asarray(h.bbox_xyxy)).astype(int)
        cv2.rectangle(img, (x1, y1), (x2, y2), (255, 200, 0), 2)
    return img


def draw_overlay(rgb: np.ndarray, hands: list[Hand], mesh_faces=None, K: np.ndarray | None = None) -> np.ndarray:
    """Frame with boxes, skeletons (and meshes if `mesh_faces`) via handos.render.overlay, labelled `#track side score`."""
    import cv2

    fn = _draw_hands_fn()
    img = None
    if fn is not None:
        try:
            img = np.ascontiguousarray(fn(rgb, hands, show_labels=False, mesh_faces=mesh_faces, K=K))
        except (TypeError, ValueError, AttributeError):
            img = None
        if img is not None and (img.shape != rgb.shape or img.dtype != np.uint8):
            img = None
    if img is None:
        img = _draw_skeleton(rgb, hands)
    scale = 0.45 * max(1.0, min(img.shape[:2]) / 480)
    thick = max(1, int(round(min(img.shape[:2]) / 480)))
    for h in hands:  # track labels, so ids can be checked by eye
        box = np.asarray(h.bbox_xyxy, np.float64)
        if not np.all(np.isfinite(box)):
            continue
        tid = "?" if h.track_id is None else str(h.track_id)
        text = f"#{tid} {h.handedness[:1].upper()} {float(h.score):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        x = int(np.clip(box[0], 0, max(0, img.shape[1] - tw - 4)))
        y = int(np.clip(box[1], th + base + 4, img.shape[0] - 1))
        color = (255, 150, 40) if h.handedness == "right" else (40, 200, 255)
        cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), color, -1)
        cv2.putText(img, text, (x + 2, y - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return img


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
    carry on); the annotated video and keyframes then cover the resumed part only.
    `video_mesh` draws the meshes into the annotated video too (slower: one rasterisation per frame).
    `stride` N processes every N-th frame only (N times faster; records keep the clip's frame numbers).
    """
    path = os.fspath(path)
    if max_hands < 1:
        raise InputError(f"max_hands must be at least 1, got {max_hands}")
    previous = _previous_records(out_jsonl, path) if resume and out_jsonl is not None else None
    start = 0 if not previous else int(previous[-1]["frame"]) + 1
    if previous and stride > 1:
        start = (start + stride - 1) // stride * stride
    reader = ClipReader(path, max_seconds=max_seconds, limit=limit, fps=fps, start_frame=start, warn=False,
                        stride=stride)
    info = reader.info
    summary = ClipSummary(path=path, width=info.width, height=info.height, fps=info.fps, smoothed=bool(smooth),
                          resumed_from=start,
                          out_jsonl=None if out_jsonl is None else os.fspath(out_jsonl),
                          out_video=None if out_video is None else os.fspath(out_video))
    cfg = tracker_config or TrackerConfig(max_hands=max_hands)
    cam = None
    tracker = None
    smoother = HandSmoother(smoothing) if smooth else None
    raw_meter, out_meter = JitterMeter(), JitterMeter()
    keyframes = KeyframeSelector(keyframe_every_s) if keyframes_dir is not None else None
    saver = None
    total = info.frames if limit is None else min(limit, info.frames or limit)
    total = None if total is None else -(-total // stride)
    tick, close_bar = _progress_callback(progress, total)
    jsonl = None
    writer = None
    version = str(getattr(model, "version", "unknown"))
    track_ids: set[int] = set()
    last_label: dict[int, tuple[str, str]] = {}  # track -> (raw label, voted label) on its latest frame
    t_start = time.perf_counter()
    try:
        if out_jsonl is not None:
            Path(out_jsonl).parent.mkdir(parents=True, exist_ok=True)
            jsonl = open(out_jsonl, "a" if previous else "w", encoding="utf-8")
        if out_video is not None:
            from handos.video.writer import VideoWriter

            writer = VideoWriter(out_video, fps=info.fps / stride)
        for fr in reader:
            h, w = fr.rgb.shape[:2]
            if cam is None:  # the camera is fixed by the first frame (after rotation)
                cam = Camera.from_any(camera, w, h)
                tracker = HandTracker(model, cfg, cam)
                if previous:
                    tracker.tracks.seed([Hand.from_dict(x) for x in previous[-1]["hands"]], start // stride - 1)
                summary.width, summary.height = w, h
            step = fr.index // stride  # the tracker counts processed frames
            raw = tracker.step(fr.rgb, step)
            hands = smoother(raw, fr.time_s) if smoother is not None else raw
            if smoother is not None:
                smoother.drop(set(tracker.tracks.tracks))
            raw_meter.update(step, raw)
            out_meter.update(step, hands)
            rec = prediction_record(path, w, h, cam.to_dict(), hands, version, frame=fr.index, time_s=fr.time_s,
                                    include_vertices=include_vertices)
            if jsonl is not None:
                jsonl.write(json.dumps(rec, separators=(",", ":")) + "\n")
                jsonl.flush()
            if writer is not None:
                faces = getattr(model, "faces_for", None) if video_mesh else None
                writer.write(draw_overlay(fr.rgb, hands, faces, cam.matrix()), fr.time_s)
            if on_frame is not None:
                on_frame(rec)
            if keyframes is not None and keyframes(rec):
                saver = saver or KeyframeSaver(path, keyframes_dir)
                saver.save(fr.index, fr.rgb, rec)
            summary.frames += 1
            summary.hands += len(hands)
            summary.frames_with_hands += int(bool(hands))
            summary.seconds = fr.time_s + stride / info.fps
            track_ids.update(x.track_id for x in hands if x.track_id is not None)
            for x in hands:
                if x.track_id is None:
                    continue
                labels = ((x.trace.handedness_raw or (x.handedness,))[0], x.handedness)
                prev = last_label.get(x.track_id)
                if prev is not None:
                    summary.handedness_flips_raw += int(prev[0] != labels[0])
                    summary.handedness_flips += int(prev[1] != labels[1])
                last_label[x.track_id] = labels
            tick(summary.frames)
    finally:
        close_bar()
        if jsonl is not None:
            jsonl.close()
        if writer is not None:
            writer.close()
        if saver is not None:
            saver.close()
    summary.elapsed_s = time.perf_counter() - t_start
    summary.broken_frames = reader.stats.broken
    summary.truncated = reader.stats.truncated
    summary.track_ids = sorted(track_ids)
    summary.tracks = len(track_ids)
    if tracker is not None:
        summary.detector_frames = tracker.stats.detector_frames
        summary.roi_frames = tracker.stats.roi_frames
        if tracker.stats.seconds_model > 0:
            summary.model_frames_per_s = tracker.stats.frames / tracker.stats.seconds_model
    summary.frames_per_s = summary.frames / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    summary.jitter_raw_px = raw_meter.value
    summary.jitter_px = out_meter.value
    if keyframes is not None:
        summary.keyframes = list(keyframes.picked)
        summary.keyframes_dir = os.fspath(keyframes_dir)
    summary.warnings = list(dict.fromkeys(list(info.notes) + reader.stats.notes))
    for msg in summary.warnings:
        warnings.warn(msg, stacklevel=2)
    return summary


def _previous_records(out_jsonl: str | os.PathLike, clip: str) -> list[dict[str, Any]] | None:
    """Complete records of `clip` in an earlier run's JSONL (a torn last line is cut off the file); None if none."""
    p = Path(os.fspath(out_jsonl))
    if not p.exists() or p.stat().st_size == 0:
        return None
    good: list[dict[str, Any]] = []
    size = 0
    with open(p, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except ValueError:
                break
            if not raw.endswith(b"\n"):
                break
            if not isinstance(rec, dict) or rec.get("frame") is None or \
                    os.path.realpath(str(rec.get("file"))) != os.path.realpath(clip):
                raise InputError(f"{p} holds records of another input; choose another --out or delete it to start over")
            good.append(rec)
            size += len(raw)
    if size < p.stat().st_size:
        with open(p, "r+b") as f:
            f.truncate(size)
    return good or None
