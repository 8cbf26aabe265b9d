"""The clip branch of `handos predict`: `handos predict clip.mp4 --out preds.jsonl --video-out annotated.mp4`."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from handos.errors import InputError
from handos.video.reader import DEFAULT_MAX_SECONDS


def predict_clip_cli(path: str, out: str | None = None, video_out: str | None = None, smooth: bool = True,
                     max_hands: int = 2, max_seconds: float | None = DEFAULT_MAX_SECONDS, limit: int | None = None,
                     keyframes_dir: str | None = None, keyframe_every_s: float = 1.0, camera: dict | None = None,
                     include_vertices: bool = False, model=None, device: str = "auto", weights: str | None = None,
                     progress: bool = True, fps: float | None = None, resume: bool = False, video_mesh: bool = False,
                     stride: int = 1):
    """Run one clip end to end (loads the model unless given); prints warnings and a one-line summary to stderr."""
    from handos.video.clip import process_clip

    if out is None and video_out is None and keyframes_dir is None:
        raise InputError("a clip needs somewhere to write: give --out preds.jsonl, --video-out annotated.mp4 or --keyframes DIR")
    if model is None:
        import handos

        model = handos.load(weights=weights, device=device)
    with warnings.catch_warnings():  # the summary's warnings are printed as one clean line each, below
        warnings.simplefilter("ignore", UserWarning)
        summary = process_clip(model, path, out_jsonl=out, out_video=video_out, smooth=smooth, max_hands=max_hands,
                               max_seconds=max_seconds, limit=limit, progress=progress, camera=camera,
                               include_vertices=include_vertices, keyframes_dir=keyframes_dir,
                               keyframe_every_s=keyframe_every_s, fps=fps, resume=resume,
                               video_mesh=video_mesh, stride=stride)
    for msg in summary.warnings:
        print(f"handos predict: warning: {msg}", file=sys.stderr)
    if progress:
        print(f"handos predict: {path}: {summary.frames} frames, {summary.frames_with_hands} with hands, "
              f"{summary.tracks} track(s), {summary.frames_per_s:.1f} frames/s"
              + (f", {summary.broken_frames} broken frames skipped" if summary.broken_frames else "")
              + "".join(f" -> {x}" for x in (out, video_out, keyframes_dir) if x), file=sys.stderr)
    return summary


def parse_camera(args: argparse.Namespace) -> dict[str, Any] | None:
    """--camera JSON or --fx [--fy --cx --cy] -> a camera dict (None: default field of view)."""
    if args.camera:
        try:
            cam = json.loads(args.camera)
        except json.JSONDecodeError as err:
            raise InputError(f"--camera must be JSON like '{{\"fx\": 500, \"fy\": 500}}': {err.msg}") from None
        return cam
    if args.fx is not None:
        cam = {"fx": args.fx, "fy": args.fy if args.fy is not None else args.fx}
        if args.cx is not None:
            cam["cx"] = args.cx
        if args.cy is not None:
            cam["cy"] = args.cy
        return cam
    return None


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the clip branch."""
    p = argparse.ArgumentParser(prog="handos predict", description="Track and reconstruct hands in a clip.")
    p.add_argument("clip", help="video file (.mp4 .mov .avi .mkv .webm ...)")
    p.add_argument("--out", help="per-frame predictions (JSONL, schema handos.prediction/1 + track_id), written as it goes")
    p.add_argument("--video-out", dest="video_out", help="annotated H.264 .mp4 that browsers play")
    p.add_argument("--video-mesh", dest="video_mesh", action="store_true", help="draw the meshes into --video-out (slower)")
    p.add_argument("--no-smooth", dest="smooth", action="store_false", help="turn temporal smoothing off")
    p.add_argument("--max-hands", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                   help=f"refuse clips longer than this (default {DEFAULT_MAX_SECONDS:g} s; 0 = no limit)")
    p.add_argument("--limit", type=int, default=None, help="process only the first N frames")
    p.add_argument("--stride", type=int, default=1, help="process every N-th frame only (N times faster)")
    p.add_argument("--fps", type=float, default=None, help="override the clip's frame rate (frame times = index / fps)")
    p.add_argument("--keyframes", dest="keyframes_dir", help="save keyframes (JPEG + keyframes.jsonl) for Label Studio here")
    p.add_argument("--keyframe-every", dest="keyframe_every_s", type=float, default=1.0, help="seconds between keyframes")
    p.add_argument("--camera", help='intrinsics as JSON, e.g. \'{"fx": 600, "fy": 600, "cx": 320, "cy": 240}\'')
    p.add_argument("--fx", type=float)
    p.add_argument("--fy", type=float)
    p.add_argument("--cx", type=float)
    p.add_argument("--cy", type=float)
    p.add_argument("--vertices", dest="include_vertices", action="store_true", help="include mesh vertices in the JSONL")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run's --out JSONL after its last frame")
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m handos.video.cli CLIP --out ...`: prints the run's summary as JSON; InputError -> exit 2."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    summary = predict_clip_cli(
        args.clip, out=args.out, video_out=args.video_out, smooth=args.smooth, max_hands=args.max_hands,
        max_seconds=args.max_seconds if args.max_seconds and args.max_seconds > 0 else None, limit=args.limit,
        keyframes_dir=args.keyframes_dir, keyframe_every_s=args.keyframe_every_s, camera=parse_camera(args),
        include_vertices=args.include_vertices, device=args.device, weights=args.weights,
        progress=not args.quiet, fps=args.fps, resume=args.resume,
        video_mesh=args.video_mesh, stride=args.stride)
    print(json.dumps(summary.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    from handos.errors import HandosError

    try:
        sys.exit(main())
    except HandosError as err:
        print(f"handos predict: error: {err}", file=sys.stderr)
        sys.exit(2)
