"""Clips: check limits, run handos.video.process_clip with a progress bar, keep per-frame hands for the 3D slider."""
from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import numpy as np

from demo.config import DemoConfig
from demo.export import new_workdir
from demo.figures import hands_figure
from demo.models import ModelCache, gpu_decorator
from demo.results import ClipResult, faces_of, hands_table, select_hands
from handos.errors import InputError
from handos.io.schema import Hand


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
    """A Hand from a record entry, vertices kept as float32 (the 3D slider holds every frame)."""
    hand = Hand.from_dict(rec_hand)
    if hand.vertices is not None:
        hand.vertices = hand.vertices.astype(np.float32)
    return hand


class ClipCallbacks:
    """Event handlers of the Clip tab."""

    def __init__(self, cache: ModelCache, cfg: DemoConfig) -> None:
        """Keep the model cache and limits; wrap clip inference for Spaces GPUs."""
        self.cache = cache
        self.cfg = cfg
        self._process = gpu_decorator(180)(self._process_impl)

    def _process_impl(self, path: str, device: str, max_hands: int, smooth: bool, progress) -> ClipResult:
        """Run process_clip; write the mp4 and a JSONL without vertices; keep hands with vertices."""
        from handos.video.clip import process_clip

        info = check_clip(path, self.cfg)
        model = self.cache.get(device)
        work = new_workdir("clip")
        stem = Path(path).stem or "clip"
        out_mp4 = work / f"{stem}.handos.mp4"
        out_jsonl = work / f"{stem}.handos.jsonl"
        frames: list[list[Hand]] = []
        total = info.frames or int(round((info.duration_s or 0) * info.fps)) or None

        with open(out_jsonl, "w", encoding="utf-8") as jsonl:
            def on_frame(rec: dict) -> None:
                frames.append([compact_hand(h) for h in rec["hands"]])
                slim = dict(rec, file=Path(path).name, hands=[dict(h, vertices=None) for h in rec["hands"]])
                jsonl.write(json.dumps(slim, separators=(",", ":")) + "\n")
                n = len(frames)
                if progress is not None and (n == 1 or n % 5 == 0):
                    progress((n, total) if total else n / (n + 10), desc=f"frame {n}" + (f" of {total}" if total else ""),
                             unit="frames")

            summary = process_clip(model, path, out_jsonl=None, out_video=str(out_mp4), smooth=bool(smooth),
                                   max_hands=int(max_hands), max_seconds=None, limit=self.cfg.max_clip_frames,
                                   include_vertices=True, on_frame=on_frame)
        if summary.frames == 0:
            raise InputError("the clip has no decodable video frames; re-encode it as H.264 mp4")
        return ClipResult(frames=frames, fps=float(summary.fps), faces=faces_of(model),
                          files=[str(out_mp4), str(out_jsonl)], name=Path(path).name, summary=summary)

    def run_clip(self, path, threshold, max_hands, layers, device, smooth, progress=gr.Progress()):
        """Button 'Run on clip': annotated mp4, JSONL, frame slider and the first frame's 3D view."""
        if not path:
            raise InputError("upload a clip first (mp4, mov, webm, avi, mkv ...)")
        if not os.path.exists(path):
            raise InputError("the uploaded clip is gone from the server; upload it again")
        progress(0, desc="reading the clip")
        try:
            result = self._process(path, device, max_hands, smooth, progress)
        except InputError as err:  # name the user's file, not the server's upload path
            raise InputError(str(err).replace(str(path), Path(path).name)) from None
        s = result.summary
        n = len(result.frames)
        result.threshold = float(threshold)
        fig, rows, _ = frame_outputs(result, 0, threshold)
        status = (f"**{n} frames**, {s.frames_with_hands} with hands, {s.tracks} track(s); "
                  f"{s.elapsed_s:.1f} s ({s.frames_per_s:.1f} frames/s)"
                  + (" · stopped at the demo's frame limit" if s.truncated else "")
                  + (f" · {s.broken_frames} broken frame(s) skipped" if s.broken_frames else ""))
        slider = gr.Slider(minimum=0, maximum=max(n - 1, 1), value=0, step=1, interactive=n > 1,
                           label=f"Frame (3D view), 0-{n - 1}")
        return result, result.files[0], slider, fig, rows, result.files, status

    def show_frame(self, result, index):
        """Frame slider: the 3D view and table of that frame."""
        if not isinstance(result, ClipResult):
            raise InputError("run a clip first; the frame slider picks frames of the last clip")
        return frame_outputs(result, index, result.threshold)


def frame_outputs(result: ClipResult, index: int, threshold: float):
    """3D figure, table rows and a status line for one frame of a processed clip."""
    index = int(np.clip(int(index or 0), 0, max(len(result.frames) - 1, 0)))
    result.current = index
    hands = select_hands(result.frames[index], threshold, 99) if result.frames else []
    t = index / result.fps if result.fps else 0.0
    fig = hands_figure(hands, result.faces.__getitem__, title=f"frame {index} ({t:.2f} s)")
    status = f"frame {index} of {len(result.frames)}: {len(hands)} hand(s)"
    return fig, hands_table(hands), status
