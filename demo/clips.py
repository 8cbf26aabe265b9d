"""Clips: check limits, track hands with handos.video.process_clip, then draw the annotated video with the page's
settings (layers, threshold, hand limit, mesh); a settings change redraws the video from the kept hands."""
from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import numpy as np

from demo.config import DemoConfig
from demo.export import new_workdir
from demo.figures import hands_figure
from demo.models import DEFAULT_RECALL, ModelCache, gpu_decorator
from demo.overlays import Layers, annotate
from demo.results import ClipResult, faces_of, hands_table, select_hands
from handos.errors import InputError
from handos.io.camera import Camera
from handos.io.schema import Hand

# what browsers play in a <video>: these get a preview; others (AVI, MKV, ...) run fine without one
PREVIEW_SUFFIXES = (".mp4", ".m4v", ".webm", ".mov", ".ogv")


def check_clip(path: str, cfg: DemoConfig):
    """Probe the clip and refuse it, with one line, when it is over the demo's limits."""
    from handos.video.reader import probe

    info = probe(path, max_seconds=None)
    if info.duration_s is not None and info.duration_s > cfg.max_clip_seconds + 0.5:
        raise InputError(f"the clip is {info.duration_s:.1f} s long; the demo takes clips up to "
                         f"{cfg.max_clip_seconds:g} s; trim it, or use `handos predict CLIP` for long clips")
    if info.width * info.height > cfg.max_clip_pixels:
        raise InputError(f"the clip is {info.width}x{info.height}; the demo takes clips up to 1920x1080; downscale it")
    return info


def compact_hand(rec_hand: dict) -> Hand:
    """A Hand from a record entry, vertices kept as float32 (the 3D slider and the video redraws hold every frame)."""
    hand = Hand.from_dict(rec_hand)
    if hand.vertices is not None:
        hand.vertices = hand.vertices.astype(np.float32)
    return hand


def clip_preview(path: str | None):
    """The uploaded clip's preview (a browser-playable file), or nothing for formats browsers cannot play."""
    if not path or Path(path).suffix.lower() not in PREVIEW_SUFFIXES:
        return None
    return path


def upload_note(path: str | None) -> str:
    """The status line after a clip upload."""
    if not path:
        return gr.skip()
    name = Path(path).name
    if Path(path).suffix.lower() in PREVIEW_SUFFIXES:
        return f"`{name}` uploaded; press **Run on clip**."
    return (f"`{name}` uploaded (browsers cannot preview {Path(path).suffix.lstrip('.').upper()} files, "
            "but handos reads it); press **Run on clip**.")


class ClipCallbacks:
    """Event handlers of the Clip tab."""

    def __init__(self, cache: ModelCache, cfg: DemoConfig) -> None:
        """Keep the model cache and limits; wrap clip inference for Spaces GPUs."""
        self.cache = cache
        self.cfg = cfg
        self._process = gpu_decorator(180)(self._process_impl)

    def _process_impl(self, path: str, device: str, recall: str, max_hands: int, smooth: bool, progress) -> ClipResult:
        """Run process_clip; write a JSONL without vertices; keep every frame's hands with vertices."""
        from handos.video.clip import process_clip

        info = check_clip(path, self.cfg)
        model = self.cache.get(device, recall or DEFAULT_RECALL)
        work = new_workdir("clip")
        stem = Path(path).stem or "clip"
        out_jsonl = work / f"{stem}.handos.jsonl"
        frames: list[list[Hand]] = []
        times: list[float] = []
        index: list[int] = []
        camera: list[dict] = []
        total = info.frames or int(round((info.duration_s or 0) * info.fps)) or None

        with open(out_jsonl, "w", encoding="utf-8") as jsonl:
            def on_frame(rec: dict) -> None:
                frames.append([compact_hand(h) for h in rec["hands"]])
                times.append(float(rec.get("time_s") or 0.0))
                index.append(int(rec["frame"]))
                camera[:] = [rec["camera"]]
                slim = dict(rec, file=Path(path).name, hands=[dict(h, vertices=None) for h in rec["hands"]])
                jsonl.write(json.dumps(slim, separators=(",", ":")) + "\n")
                n = len(frames)
                if progress is not None and (n == 1 or n % 5 == 0):
                    progress((n, total) if total else n / (n + 10), desc=f"tracking: frame {n}" + (f" of {total}" if total else ""),
                             unit="frames")

            summary = process_clip(model, path, out_jsonl=None, out_video=None, smooth=bool(smooth),
                                   max_hands=int(max_hands), max_seconds=None, limit=self.cfg.max_clip_frames,
                                   include_vertices=True, on_frame=on_frame)
        if summary.frames == 0:
            raise InputError("the clip has no decodable video frames; re-encode it as H.264 mp4")
        t0 = times[0] if times else 0.0
        cam = Camera.from_any(camera[0], summary.width, summary.height) if camera else None
        return ClipResult(frames=frames, fps=float(summary.fps), faces=faces_of(model), files=[str(out_jsonl)],
                          name=Path(path).name, summary=summary, path=path, times=[t - t0 for t in times],
                          frame_index=index, camera=cam, max_hands=int(max_hands))

    def run_clip(self, path, threshold, max_hands, layers, device, smooth, recall=DEFAULT_RECALL, progress=gr.Progress()):
        """Button 'Run on clip': annotated mp4 (drawn with the page's settings), JSONL, frame slider, 3D view."""
        if not path:
            raise InputError("upload a clip first (mp4, mov, webm, avi, mkv ...)")
        if not os.path.exists(path):
            raise InputError("the uploaded clip is gone from the server; upload it again")
        progress(0, desc="reading the clip")
        try:
            result = self._process(path, device, recall, max_hands, smooth, progress)
            video = self.render(result, threshold, max_hands, layers, progress)
        except InputError as err:  # name the user's file, not the server's upload path
            raise InputError(str(err).replace(str(path), Path(path).name)) from None
        n = len(result.frames)
        result.threshold = float(threshold)
        fig, rows, _ = frame_outputs(result, 0, threshold)
        slider = gr.Slider(minimum=0, maximum=max(n - 1, 1), value=0, step=1, interactive=n > 1,
                           label=f"Frame, 0-{n - 1} (moves the video and the 3D view)")
        return (result, video, slider, fig, rows, [video, *result.files], clip_status(result, threshold),
                json.dumps(frame_seek_times(result)))

    def render(self, result: ClipResult, threshold, max_hands, layers, progress=None) -> str:
        """Draw the kept hands over the clip's frames with the given settings; a new H.264 mp4 each time."""
        from handos.video.reader import ClipReader
        from handos.video.writer import VideoWriter

        chosen = Layers.from_names(layers)
        position = {f: i for i, f in enumerate(result.frame_index)}
        K = (result.camera or Camera.from_any(None, result.summary.width, result.summary.height)).matrix()
        faces_for = result.faces.__getitem__
        result.renders += 1
        stem = Path(result.name).stem or "clip"
        out = new_workdir("clipvideo") / f"{stem}.handos.mp4"
        t0 = None
        writer = VideoWriter(out, fps=result.fps)
        try:
            for fr in ClipReader(result.path, max_seconds=None, limit=self.cfg.max_clip_frames, warn=False):
                i = position.get(fr.index)
                if i is None:
                    continue
                t0 = fr.time_s if t0 is None else t0
                hands = select_hands(result.frames[i], threshold, max_hands)
                writer.write(annotate(fr.rgb, hands, K, faces_for, chosen), fr.time_s - t0)
                if progress is not None and (i == 0 or i % 10 == 0):
                    progress((i + 1, len(result.frames)), desc=f"drawing: frame {i + 1} of {len(result.frames)}",
                             unit="frames")
        finally:
            writer.close()
        result.threshold, result.max_hands, result.layers = float(threshold), int(max_hands), tuple(layers or ())
        return str(out)

    def redraw(self, result: ClipResult, threshold, max_hands, layers):
        """Settings changed: (new video, downloads, 3D figure, table rows, status) from the kept hands, no model run."""
        max_hands = min(int(max_hands), 99)
        video = self.render(result, threshold, max_hands, layers)
        fig, rows, _ = frame_outputs(result, result.current, threshold, max_hands)
        return video, [video, *result.files], fig, rows, clip_status(result, threshold)

    def show_frame(self, result, index):
        """Frame slider: the 3D view and table of that frame (the browser seeks the video itself)."""
        if not isinstance(result, ClipResult):
            raise InputError("run a clip first; the frame slider picks frames of the last clip")
        return frame_outputs(result, index, result.threshold, result.max_hands)


    def show_frame_if_any(self, result, index):
        """The slider moved (by hand, or set by a run): the frame's 3D view and table (the plot's title names the
        frame; the status line keeps the clip's summary), or nothing without a kept clip."""
        if not isinstance(result, ClipResult):
            return gr.skip(), gr.skip()
        return self.show_frame(result, index)[:2]


def frame_seek_times(result: ClipResult) -> list[float]:
    """Per frame, the time (s) in the annotated video to seek to: the middle of that frame's display interval."""
    half = 0.5 / result.fps if result.fps else 0.0
    return [round(t + half, 4) for t in result.times]


def clip_status(result: ClipResult, threshold) -> str:
    """The status line of a processed clip."""
    s = result.summary
    n = len(result.frames)
    shown = sum(bool(select_hands(f, threshold, result.max_hands)) for f in result.frames)
    return (f"**{n} frames**, {s.frames_with_hands} with hands ({shown} at threshold {float(threshold):.2f}), "
            f"{s.tracks} track(s); {s.elapsed_s:.1f} s ({s.frames_per_s:.1f} frames/s)"
            + (" · stopped at the demo's frame limit" if s.truncated else "")
            + (f" · {s.broken_frames} broken frame(s) skipped" if s.broken_frames else "")
            + f" · video drawn with: {', '.join(result.layers) or 'nothing (the plain clip)'}")


def frame_outputs(result: ClipResult, index: int, threshold: float, max_hands: int = 99):
    """3D figure, table rows and a status line for one frame of a processed clip."""
    index = int(np.clip(int(index or 0), 0, max(len(result.frames) - 1, 0)))
    result.current = index
    hands = select_hands(result.frames[index], threshold, max_hands) if result.frames else []
    t = result.times[index] if index < len(result.times) else (index / result.fps if result.fps else 0.0)
    fig = hands_figure(hands, result.faces.__getitem__, title=f"frame {index} ({t:.2f} s)")
    status = f"frame {index} of {len(result.frames)}: {len(hands)} hand(s)"
    return fig, hands_table(hands), status


__all__ = ["ClipCallbacks", "check_clip", "clip_preview", "clip_status", "frame_outputs", "frame_seek_times",
           "upload_note"]
