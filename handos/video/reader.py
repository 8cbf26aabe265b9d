"""Clip reading with PyAV: validated, streamed frame by frame (never the whole clip in memory)."""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from handos.errors import InputError

VIDEO_SUFFIXES: tuple[str, ...] = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts",
)
DEFAULT_MAX_SECONDS = 600.0  # clips longer than this are refused unless the caller raises the limit
MAX_FPS = 1000.0  # frame rates above this (or <= 0) are treated as missing
MAX_FRAME_PIXELS = 50_000_000  # same bound as handos.io.images.MAX_PIXELS (about 7000 x 7000)
MAX_BROKEN_RUN = 200  # give up after this many undecodable packets in a row


def is_clip(path: str | os.PathLike) -> bool:
    """True when the path's suffix is a video container handos reads as a clip."""
    return Path(os.fspath(path)).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class ClipInfo:
    """What the container says about the clip, checked before any frame is decoded."""

    path: str
    width: int
    height: int  # after the display rotation
    fps: float  # nominal frame rate (from the stream, else from the timestamps, else the caller's)
    duration_s: float | None  # None when the container does not know
    frames: int | None  # container's frame count, None when unknown
    codec: str
    rotation: int  # degrees counter-clockwise applied to decoded frames (0, 90, 180, 270)
    variable_rate: bool = False
    notes: list[str] = field(default_factory=list)  # warnings raised while probing


@dataclass
class Frame:
    """One decoded frame."""

    index: int  # 0-based among the frames yielded (broken frames are not counted)
    time_s: float  # presentation time from the clip's start
    rgb: np.ndarray  # (H, W, 3) uint8


@dataclass
class ReadStats:
    """Counters the reader updates while streaming."""

    decoded: int = 0
    broken: int = 0  # packets/frames that could not be decoded (skipped)
    truncated: bool = False  # stopped at max_seconds / limit
    notes: list[str] = field(default_factory=list)  # warnings raised while reading


def _open(path: str):
    """Open a container or raise a one-line InputError."""
    import av

    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a folder, not a clip")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    try:
        return av.open(str(p), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise InputError(f"{path}: not a readable video ({type(err).__name__}: {getattr(err, 'strerror', err)}); "
                         "check the file or re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`") from None


def _rate(value) -> float | None:
    """A stream rate as a float, or None if missing/zero/absurd."""
    try:
        r = float(value) if value is not None else None
    except (TypeError, ZeroDivisionError):
        return None
    if r is None or not math.isfinite(r) or r <= 0 or r > MAX_FPS:
        return None
    return r


def probe(path: str | os.PathLike, max_seconds: float | None = DEFAULT_MAX_SECONDS, fps: float | None = None) -> ClipInfo:
    """Read the clip's header and check it (video stream, size, frame rate, duration); raise InputError if unusable."""
    path = os.fspath(path)
    container = _open(path)
    try:
        return _probe_open(container, path, max_seconds, fps)
    finally:
        container.close()


def _video_stream(container, path: str):
    """The clip's first video stream or a one-line InputError."""
    if not container.streams:
        raise InputError(f"{path}: the file holds no streams (an empty clip with no frames); give a video with frames")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise InputError(f"{path}: has no video stream (streams: {', '.join(kinds)}); give a video file")
    return container.streams.video[0]


def _probe_open(container, path: str, max_seconds: float | None, fps: float | None) -> ClipInfo:
    """probe() on an open container."""
    stream = _video_stream(container, path)
    ctx = stream.codec_context
    if ctx is None:
        raise InputError(f"{path}: the video stream's codec is unknown or the header is damaged; "
                         "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`")
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width and height and width * height > MAX_FRAME_PIXELS:
        raise InputError(f"{path}: frames are {width}x{height}, above the {MAX_FRAME_PIXELS // 1_000_000} MP limit; downscale the clip")
    notes: list[str] = []
    avg, guessed = _rate(stream.average_rate), _rate(stream.guessed_rate)
    nominal = _rate(fps) if fps is not None else (avg or guessed)
    if fps is not None and nominal is None:
        raise InputError(f"fps must be a number in (0, {MAX_FPS:g}], got {fps!r}")
    variable = bool(avg and guessed and abs(avg - guessed) > 0.01 * guessed)
    if variable:
        notes.append(f"variable frame rate (average {avg:.3f}, nominal {guessed:.3f} fps): times come from the timestamps")
    if nominal is None:
        notes.append("the clip declares no usable frame rate; times come from the timestamps (30 fps assumed where missing)")
    duration = None
    if stream.duration is not None and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000.0
    frames = int(stream.frames) if stream.frames else None
    if duration is None and frames and nominal:
        duration = frames / nominal
    if duration is not None and (not math.isfinite(duration) or duration < 0):
        duration = None
    if max_seconds is not None and duration is not None and duration > max_seconds:
        raise InputError(
            f"{path}: the clip is {duration / 60:.1f} min long, over the {max_seconds / 60:g} min limit; "
            "raise it with --max-seconds, or take the first part with --limit N frames")
    return ClipInfo(path=path, width=width, height=height, fps=nominal or 30.0, duration_s=duration, frames=frames,
                    codec=ctx.name, rotation=0, variable_rate=variable, notes=notes)


def _rotate(rgb: np.ndarray, rotation: float | None) -> tuple[np.ndarray, int]:
    """Apply the display matrix rotation (degrees counter-clockwise, as ffmpeg reports it)."""
    if not rotation:
        return rgb, 0
    k = int(round(float(rotation) / 90.0)) % 4
    return (np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb), 90 * k


class ClipReader:
    """Iterate over a clip's frames as RGB arrays, one at a time, skipping (and counting) broken frames.

    >>> reader = ClipReader("clip.mp4")
    >>> for frame in reader: ...        # Frame(index, time_s, rgb)
    """

    def __init__(self, path: str | os.PathLike, max_seconds: float | None = DEFAULT_MAX_SECONDS,
                 limit: int | None = None, fps: float | None = None, start_frame: int = 0, warn: bool = True,
                 stride: int = 1) -> None:
        """Probe and validate the clip (raises InputError); `limit`: stop after clip frame limit-1; `fps` overrides the rate.

        `start_frame`: frames before it are decoded but not converted or yielded (resuming a run);
        `stride`: yield only frames whose index is a multiple of it (indices and times stay the clip's).
        """
        self.path = os.fspath(path)
        self.info = probe(self.path, max_seconds=max_seconds, fps=fps)
        self.max_seconds = max_seconds
        self.limit = limit
        self.start_frame = max(0, int(start_frame))
        self.warn = warn
        if not (isinstance(stride, int) and stride >= 1):
            raise InputError(f"stride must be a whole number of frames >= 1, got {stride!r}")
        self.stride = stride
        if limit is not None and limit <= 0:
            raise InputError(f"limit must be a positive number of frames, got {limit}")
        self.stats = ReadStats()
        self._fps_override = fps is not None

    def __iter__(self) -> Iterator[Frame]:
        """Stream frames; raises InputError when the clip holds no decodable frame at all."""
        import av

        path = self.path
        self.stats = ReadStats()
        container = _open(path)
        try:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            tb = stream.time_base
            start = stream.start_time if stream.start_time is not None else None
            fps = self.info.fps
            index = 0
            broken_run = 0
            last_t = -math.inf
            first_size: tuple[int, int] | None = None
            resized = False
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.error.FFmpegError, ValueError) as err:  # undecodable packet: skip it, count it
                    if packet.size == 0 and packet.pts is None:
                        continue
                    self.stats.broken += 1
                    broken_run += 1
                    if broken_run >= MAX_BROKEN_RUN:
                        raise InputError(f"{path}: {broken_run} undecodable frames in a row ({type(err).__name__}); "
                                         "the clip is damaged, re-encode or repair it") from None
                    continue
                for vf in frames:
                    if getattr(vf, "is_corrupt", False):
                        self.stats.broken += 1
                        broken_run += 1
                        continue
                    broken_run = 0
                    if vf.width * vf.height > MAX_FRAME_PIXELS:
                        raise InputError(f"{path}: frames are {vf.width}x{vf.height}, above the "
                                         f"{MAX_FRAME_PIXELS // 1_000_000} MP limit; downscale the clip")
                    t = self._time(vf, tb, start, index, fps)
                    if t <= last_t:  # duplicate / out-of-order timestamps: keep times increasing
                        t = last_t + 1.0 / fps
                    last_t = t
                    if self.max_seconds is not None and t > self.max_seconds:
                        self.stats.truncated = True
                        self._note(f"{path}: stopped at the {self.max_seconds:g} s limit (--max-seconds to change)")
                        return
                    if self.limit is not None and index >= self.limit:
                        self.stats.truncated = True
                        return
                    if index < self.start_frame or index % self.stride:
                        index += 1
                        continue
                    try:
                        rgb = vf.to_ndarray(format="rgb24")
                    except (av.error.FFmpegError, ValueError):
                        self.stats.broken += 1
                        continue
                    rgb, rot = _rotate(rgb, getattr(vf, "rotation", 0))
                    if first_size is None:
                        first_size = rgb.shape[:2]
                        self.info.rotation = rot
                        self.info.height, self.info.width = first_size
                    elif rgb.shape[:2] != first_size:  # the stream changed size mid-clip: keep one size
                        import cv2

                        if not resized:
                            self._note(f"{path}: frame size changes mid-clip ({rgb.shape[1]}x{rgb.shape[0]}); "
                                       f"frames are resized to {first_size[1]}x{first_size[0]}")
                        resized = True
                        rgb = cv2.resize(rgb, (first_size[1], first_size[0]), interpolation=cv2.INTER_AREA)
                    self.stats.decoded += 1
                    yield Frame(index=index, time_s=t, rgb=rgb)
                    index += 1
        except av.error.FFmpegError as err:
            if self.stats.decoded == 0:
                raise InputError(f"{path}: cannot read the clip ({type(err).__name__}); re-encode it, e.g. "
                                 "`ffmpeg -i IN -c:v libx264 OUT.mp4`") from None
            self.stats.broken += 1
            self._note(f"{path}: stopped early at a damaged part after {self.stats.decoded} frames")
        finally:
            container.close()
        if self.stats.decoded == 0 and self.start_frame == 0:
            what = f" ({self.stats.broken} broken)" if self.stats.broken else ""
            raise InputError(f"{path}: the clip has no decodable video frames{what}")
        if self.stats.broken:
            self._note(f"{path}: skipped {self.stats.broken} broken frame(s)")

    def _note(self, msg: str) -> None:
        """Record a warning in stats.notes (and emit it, unless the reader was made with warn=False)."""
        self.stats.notes.append(msg)
        if self.warn:
            warnings.warn(msg, stacklevel=3)

    def _time(self, vf, tb: Fraction | None, start: int | None, index: int, fps: float) -> float:
        """Presentation time in seconds from the clip's start (timestamps, else index / fps)."""
        if self._fps_override or vf.pts is None or not tb:
            return index / fps
        return float((vf.pts - (start or 0)) * tb)


def read_frames(path: str | os.PathLike, indices: list[int] | set[int], **kwargs) -> Iterator[Frame]:
    """Stream only the frames whose index is in `indices` (for keyframe export)."""
    wanted = set(int(i) for i in indices)
    if not wanted:
        return
    last = max(wanted)
    for frame in ClipReader(path, **kwargs):
        if frame.index in wanted:
            yield frame
        if frame.index >= last:
            break
