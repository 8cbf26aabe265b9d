"""Writing browser-playable H.264 mp4 clips with PyAV (libx264, yuv420p, even sizes, +faststart)."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from handos.errors import InputError

TIME_BASE = Fraction(1, 90_000)  # the usual mp4 video clock; frames keep their own times (variable rates work)


def even_pad(rgb: np.ndarray) -> np.ndarray:
    """Pad an (H,W,3) frame by repeating its last row/column so both sides are even (yuv420p needs it)."""
    h, w = rgb.shape[:2]
    ph, pw = h % 2, w % 2
    if not (ph or pw):
        return rgb
    return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")


class VideoWriter:
    """Encode RGB frames to an H.264 mp4 one at a time.

    >>> with VideoWriter("out.mp4", fps=30) as w:
    ...     w.write(rgb, time_s=0.0)
    """

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, crf: int = 23, preset: str = "veryfast") -> None:
        """Open `path` for writing (its folder is created); the size is taken from the first frame."""
        import av

        self.path = Path(os.fspath(path))
        if self.path.suffix.lower() not in (".mp4", ".m4v", ".mov"):
            raise InputError(f"{path}: the annotated clip must be an .mp4 (H.264) file")
        if not (fps and 0 < fps <= 1000):
            raise InputError(f"fps must be in (0, 1000], got {fps!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps)
        self.rate = Fraction(self.fps).limit_denominator(1001)
        self.crf, self.preset = crf, preset
        self.container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        self.stream = None
        self.size: tuple[int, int] | None = None  # (W, H) after padding
        self.frames = 0
        self.last_pts = -1

    def _open_stream(self, w: int, h: int) -> None:
        """Create the H.264 stream for frames of this size."""
        stream = self.container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        stream.options = {"crf": str(self.crf), "preset": self.preset, "profile": "high"}
        self.stream, self.size = stream, (w, h)

    def write(self, rgb: np.ndarray, time_s: float | None = None) -> None:
        """Encode one (H,W,3) uint8 RGB frame shown at `time_s` (default: frame count / fps)."""
        import av

        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(f"frames must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        rgb = even_pad(np.ascontiguousarray(rgb))
        h, w = rgb.shape[:2]
        if self.stream is None:
            self._open_stream(w, h)
        elif (w, h) != self.size:
            raise InputError(f"frame size changed mid-clip ({self.size[0]}x{self.size[1]} -> {w}x{h})")
        t = self.frames / self.fps if time_s is None else float(time_s)
        pts = max(int(round(t / TIME_BASE)), self.last_pts + 1)
        self.last_pts = pts
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, TIME_BASE
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (an mp4 with no frames is removed)."""
        if self.container is None:
            return
        try:
            if self.stream is not None:
                for packet in self.stream.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None
        if self.frames == 0:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        """Context manager entry."""
        return self

    def __exit__(self, *exc) -> None:
        """Close on exit, even after an error (frames written so far are kept)."""
        self.close()
