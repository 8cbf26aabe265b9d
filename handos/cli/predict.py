"""`handos predict INPUT... --out preds.jsonl`: images, folders, globs, manifests and clips."""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from handos.batch.parallel import IMAGES_PER_PROCESS
from handos.errors import InputError
from handos.foundation import RECALL_MODES, RUNTIME_HELP, RUNTIMES

if TYPE_CHECKING:
    from handos.video.clip import ClipSummary


def build_parser() -> argparse.ArgumentParser:
    """The predict verb's options."""
    p = argparse.ArgumentParser(prog="handos predict", description="Find hands and reconstruct them in 3D.")
    p.add_argument("inputs", nargs="*", help="images, folders, globs, JSONL manifests ({file, camera} per line) or clips")
    p.add_argument("--out", required=True, help="output .jsonl file, or a folder for shards")
    p.add_argument("--boxes", default=None, metavar="JSONL",
                   help="hand boxes to reconstruct instead of detecting: one {\"file\", \"boxes\": [[x1, y1, x2, y2], ...], "
                        "\"camera\"} per line (paths relative to it); those images' records hold exactly one hand per box")
    p.add_argument("--weights", default=None, help="decoder weights: a local path or a Hugging Face Hub repo id")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2,
                   help="image decode threads of a single process (0 = decode in the main thread); worker processes "
                        "decode their own images")
    p.add_argument("--processes", default="auto", metavar="N|auto",
                   help="CPU only: model replicas in N worker processes, one thread each (torch and LiteRT), which keep "
                        "every core busy (~350 MB each); records are still written in input order. auto (default): "
                        f"one per core when there are at least {IMAGES_PER_PROCESS} images per core to predict, else 1 "
                        "(this process, with its decode threads and LiteRT's threads across the cores). The workers' "
                        "start-up (imports, model loads) takes ~1.3-1.5 s on idle cores: on 2 cores they pay off from "
                        "~500-600 images (then ~90 images/s against ~75)")
    p.add_argument("--max-hands", type=int, default=None)
    p.add_argument("--recall", choices=RECALL_MODES, default="fast",
                   help="extra detector views for hands MediaPipe's path misses: off = MediaPipe exactly, fast "
                        "(default), full, search (multi-scale, ~10x slower; for pre-labeling)")
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help=RUNTIME_HELP)
    p.add_argument("--vertices", action="store_true", help="include mesh vertices in the records")
    p.add_argument("--shard-size", type=int, default=0, help="records per shard (writes OUT/preds-NNNNN.jsonl)")
    p.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    p.add_argument("--no-resume", action="store_true", help="refuse to append to an existing output")
    p.add_argument("--video-out", default=None, help="for a clip: annotated H.264 mp4")
    p.add_argument("--no-smooth", action="store_true", help="for clips: turn temporal smoothing off")
    p.add_argument("--keyframes", default=None, help="for clips: save keyframes (JPEG + keyframes.jsonl) here for Label Studio")
    p.add_argument("--keyframe-every", type=float, default=1.0, help="for clips: seconds between keyframes")
    p.add_argument("--video-mesh", action="store_true", help="for a clip: draw the meshes into --video-out (slower)")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="for clips: refuse longer clips (default 10 min; 0 = no limit)")
    p.add_argument("--stride", type=int, default=1, help="for clips: process every N-th frame")
    p.add_argument("--limit", type=int, default=None, help="for clips: process only the first N frames")
    p.add_argument("--fps", type=float, default=None, help="for clips: override the frame rate (frame times = index / fps)")
    p.add_argument("--ray", action="store_true", help="distribute over a Ray cluster (pip install 'handos[ray]')")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default starts a local one")
    p.add_argument("--num-actors", type=int, default=2, help="Ray: model replicas")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="Ray: GPUs per model replica")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    """Run predict; returns 0 when every input was processed, 1 when some failed (see OUT.errors.jsonl)."""
    args = build_parser().parse_args(argv)
    from handos.io.manifest import expand_inputs

    if not args.inputs and not args.boxes:
        raise InputError("give images, folders, globs, manifests or clips to predict (or --boxes JSONL)")
    items = expand_inputs(args.inputs, boxes=args.boxes)
    clips = [it for it in items if it.is_video]
    images = [it for it in items if not it.is_video]
    if clips and images:
        raise InputError("give either clips or images to one predict run, not both")
    prompted = [it for it in items if it.boxes is not None]
    if prompted and (clips or args.ray):
        raise InputError(f"box prompts apply to images without --ray ({prompted[0].file} has boxes)")
    if args.batch_size < 1 or args.workers < 0:
        raise InputError("--batch-size must be >= 1 and --workers >= 0")
    processes = parse_processes(args.processes)
    if processes not in (None, 1) and (args.ray or clips):
        raise InputError(f"--processes {processes} applies to images on this machine's CPU, not to "
                         f"{'--ray (use --num-actors)' if args.ray else 'clips'}")
    if args.ray:
        from handos.batch.ray import run_ray

        summary = run_ray(
            [it for it in images], out=args.out, weights=args.weights, address=args.address,
            num_actors=args.num_actors, batch_size=args.batch_size, gpus_per_actor=args.gpus_per_actor,
            fmt=args.format, include_vertices=args.vertices, recall=args.recall, runtime=args.runtime,
        )
        print(f"handos predict: {summary.done} images ({summary.skipped} already done, {summary.failed} failed) "
              f"in {summary.seconds:.1f} s with Ray -> {args.out}", file=sys.stderr)
        return 1 if summary.failed else 0

    from handos.device import resolve_device

    device = resolve_device(args.device)
    if processes not in (None, 1) and device.type != "cpu":
        raise InputError(f"--processes {processes} runs CPU workers; on {device} one process batches on the GPU: "
                         "drop --processes (or use --device cpu)")
    if clips:
        model = load_model(args)
        if len(clips) > 1 and args.video_out:
            raise InputError("--video-out takes one clip; run clips one by one or drop --video-out")
        for clip in clips:
            out = args.out
            if len(clips) > 1:
                os.makedirs(args.out, exist_ok=True)
                out = os.path.join(args.out, os.path.splitext(os.path.basename(clip.path))[0] + ".jsonl")
            predict_clip(model, clip.path, out, clip.camera, args)
        return 0

    from tqdm import tqdm

    from handos.batch.parallel import auto_processes, run_in_processes
    from handos.batch.runner import run_images
    from handos.batch.workers import WorkerOptions
    from handos.io.records import RecordWriter

    writer = RecordWriter(args.out, shard_size=args.shard_size, fmt=args.format, resume=not args.no_resume)
    todo = sum(1 for it in images if it.file not in writer.done)
    if processes is None:
        processes = auto_processes(todo) if device.type == "cpu" else 1
    processes = min(processes, max(1, todo))  # a worker without an image to predict would only cost its start-up
    model = load_model(args) if processes == 1 else None  # else each worker loads its own
    with tqdm(total=todo, unit="img", disable=args.quiet, desc="predict", dynamic_ncols=True) as bar:
        if model is None:
            options = WorkerOptions(weights=args.weights, recall=args.recall, runtime=args.runtime,
                                    max_hands=args.max_hands, include_vertices=args.vertices)
            summary = run_in_processes(images, writer, processes, options, batch_size=args.batch_size,
                                       progress=bar.update)
        else:
            summary = run_images(model, images, writer, batch_size=args.batch_size, workers=args.workers,
                                 include_vertices=args.vertices, progress=bar.update)
    how = f" ({summary.processes} processes, {summary.startup_s:.1f} s start-up)" if summary.processes > 1 else ""
    print(f"handos predict: {summary.done} images, {summary.hands} hands, {summary.skipped} already done, "
          f"{summary.failed} failed, {summary.images_per_s:.1f} img/s{how} -> {args.out}", file=sys.stderr)
    if summary.failed:
        print(f"handos predict: failures listed in {writer.errors_path} (first: {summary.errors[0]})", file=sys.stderr)
        if summary.done == 0 and len(images) == summary.failed:
            raise InputError(summary.errors[0] if len(images) == 1 else f"none of the {len(images)} inputs could be read")
        return 1
    return 0


def parse_processes(value: str) -> int | None:
    """--processes: "auto" -> None (decided once the images to do are known), else a count >= 1 (InputError)."""
    if value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"--processes must be auto or a whole number >= 1, got {value!r}")
    return n


def load_model(args: argparse.Namespace):
    """The model as predict's options say (weights, device, recall, runtime, max hands)."""
    import handos

    model = handos.load(weights=args.weights, device=args.device, recall=args.recall, runtime=args.runtime)
    if args.max_hands is not None:
        model.max_hands = args.max_hands
    return model


def predict_clip(model, path: str, out: str, camera: dict | None, args: argparse.Namespace) -> ClipSummary:
    """One clip tracked, smoothed and written as predict's options say; warnings and a summary line on stderr."""
    import warnings

    from handos.video.clip import process_clip

    with warnings.catch_warnings():  # the summary's warnings are printed as one clean line each, below
        warnings.simplefilter("ignore", UserWarning)
        summary = process_clip(
            model, path, out_jsonl=out, out_video=args.video_out, smooth=not args.no_smooth, max_hands=model.max_hands,
            max_seconds=args.max_seconds if args.max_seconds > 0 else None, limit=args.limit, progress=not args.quiet,
            camera=camera, include_vertices=args.vertices, keyframes_dir=args.keyframes,
            keyframe_every_s=args.keyframe_every, fps=args.fps, resume=not args.no_resume, video_mesh=args.video_mesh,
            stride=args.stride)
    for msg in summary.warnings:
        print(f"handos predict: warning: {msg}", file=sys.stderr)
    if not args.quiet:
        print(f"handos predict: {path}: {summary.frames} frames, {summary.frames_with_hands} with hands, "
              f"{summary.tracks} track(s), {summary.frames_per_s:.1f} frames/s"
              + (f", {summary.broken_frames} broken frames skipped" if summary.broken_frames else "")
              + "".join(f" -> {x}" for x in (out, args.video_out, args.keyframes) if x), file=sys.stderr)
    return summary
