"""`handos bench`: latency and throughput, as ratios against references measured in the same run."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "realdata" / "ge2019_realworld" / "images"
MEDIAPIPE_VENV = REPO / ".venv-mediapipe"


def build_parser() -> argparse.ArgumentParser:
    """The bench verb's options."""
    p = argparse.ArgumentParser(prog="handos bench", description="Measure handos speed (CPU and, when present, CUDA).")
    p.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of images to time on")
    p.add_argument("--limit", type=int, default=50, help="images to use")
    p.add_argument("--vs", choices=("mediapipe",), default=None, help="also time MediaPipe's own runtime on the same images")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own choice, one per core, which is what handos.load() "
                        "users get; MediaPipe's XNNPACK runs one inference thread on desktop Linux whatever this says)")
    p.add_argument("--one-core", action="store_true",
                   help="pin this process and MediaPipe's to one CPU core (MediaPipe's graph threads then stop "
                        "competing with its own inference thread: it runs faster that way on 2 cores)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--what", default="latency,throughput,video", help="comma list of latency,throughput,ray,video")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p


def image_paths(folder: str, limit: int) -> list[str]:
    """The first `limit` images of a folder (sorted)."""
    from handos.errors import InputError
    from handos.io.manifest import IMAGE_EXTS

    paths = sorted(str(p) for p in Path(folder).glob("*") if p.suffix.lower() in IMAGE_EXTS)[:limit]
    if not paths:
        raise InputError(f"{folder}: no images to benchmark on (use --images DIR)")
    return paths


def _block_times(model, paths: list[str]) -> tuple[list[float], int]:
    """Seconds per image (load + predict, batch size 1) and hands found over a block of images."""
    from handos.io.images import load_image

    times, hands = [], 0
    for p in paths:
        start = time.perf_counter()
        hands += len(model(load_image(p)))
        times.append(time.perf_counter() - start)
    return times, hands


def _summary(times: list[float], hands: int, images: int) -> dict:
    """Median and p90 in ms."""
    return {"images": images, "hands": hands, "median_ms": 1e3 * float(np.median(times)),
            "p90_ms": 1e3 * float(np.percentile(times, 90))}


class FoundationOnly:
    """The frozen foundation alone (palm detector + landmark network, MediaPipe's own graph): image -> scored hands.

    The like-for-like counterpart of MediaPipe Hands' `process` (same two networks, same outputs: boxes, 21
    landmarks, handedness); the full model adds the decoder's 3D joints, camera and mesh on top.
    """

    def __init__(self, model):
        self.model = model

    def __call__(self, image):
        """Scores of the hands found (over the model's threshold), one per hand."""
        from handos.io.images import load_image

        fout = self.model.foundation.detect([load_image(image).rgb], max_hands=self.model.max_hands)
        return [s for s in fout.score.tolist() if s >= self.model.score_threshold]


def time_latency(models: dict, paths: list[str], mediapipe: bool = False, rounds: int = 2, block: int = 10) -> dict:
    """End-to-end per-image latency (decode + foundation + decoder, batch size 1) of each model, and of MediaPipe.

    The runs are interleaved in blocks of `block` images (model A, model B, MediaPipe, next block, ...; `rounds`
    passes over `paths`) so that all see the same machine: on a shared VM the speed drifts by +-30 % within
    minutes, and separate runs minutes apart gave ratios from 1.7 to 2.3 for the same code.
    Returns {name: {images, hands, median_ms, p90_ms}} (+ "mediapipe" when asked and its venv exists); with
    MediaPipe, each model also gets `block_ratio`: the median over blocks of (its median / MediaPipe's median in
    the same block), which pairs the runtimes block by block and so drops most of the drift between blocks.
    """
    for m in models.values():  # warm-up: traces, allocator, caches
        _block_times(m, paths[:5])
    server = start_mediapipe(paths) if mediapipe else None
    times: dict[str, list[float]] = {k: [] for k in list(models) + (["mediapipe"] if server else [])}
    hands = dict.fromkeys(times, 0)
    block_medians: dict[str, list[float]] = {k: [] for k in times}
    try:
        for _ in range(rounds):
            for s in range(0, len(paths), block):
                chunk = paths[s:s + block]
                for name, m in models.items():
                    t, h = _block_times(m, chunk)
                    times[name] += t
                    hands[name] += h
                    block_medians[name].append(float(np.median(t)))
                if server:
                    server.stdin.write(f"{s} {s + len(chunk)}\n")
                    server.stdin.flush()
                    res = json.loads(server.stdout.readline())
                    times["mediapipe"] += res["seconds"]
                    hands["mediapipe"] += res["hands"]
                    block_medians["mediapipe"].append(float(np.median(res["seconds"])))
    finally:
        if server:
            server.stdin.close()
            server.wait(timeout=60)
    out = {k: _summary(v, hands[k] // rounds, len(paths)) for k, v in times.items()}
    if server:
        mp = np.asarray(block_medians["mediapipe"])
        for name in models:
            out[name]["block_ratio"] = float(np.median(np.asarray(block_medians[name]) / mp))
    return out


def start_mediapipe(paths: list[str]) -> subprocess.Popen | None:
    """MediaPipe Hands in its reference venv, serving timed blocks of `paths` (None if the venv is absent)."""
    python = MEDIAPIPE_VENV / "bin" / "python"
    if not python.exists():
        print("bench: MediaPipe reference venv missing (bash .ci/setup_mediapipe_venv.sh); skipping --vs", file=sys.stderr)
        return None
    proc = subprocess.Popen([str(python), str(REPO / "tools" / "mediapipe_bench.py"), *paths, "--serve"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("the MediaPipe reference runtime did not start (see tools/mediapipe_bench.py)")
    return proc


def time_throughput(model, paths: list[str], batch_size: int, workers: int) -> dict:
    """Images/s of the streaming runner (decode pool with `workers` threads, 0 = inline decode)."""
    from handos.io.manifest import WorkItem
    from handos.io.records import RecordWriter
    from handos.runner import run_images

    with tempfile.TemporaryDirectory() as tmp:
        writer = RecordWriter(os.path.join(tmp, "p.jsonl"))
        summary = run_images(model, [WorkItem(p, p) for p in paths], writer, batch_size=batch_size, workers=workers)
    return {"images": summary.done, "images_per_s": summary.images_per_s, "workers": workers, "batch_size": batch_size}


def time_ray(paths: list[str], batch_size: int) -> dict:
    """Images/s through Ray Data with 2 CPU actors on a local Ray instance."""
    from handos.io.manifest import WorkItem
    from handos.ray_predict import run_ray

    with tempfile.TemporaryDirectory() as tmp:
        summary = run_ray([WorkItem(p, p) for p in paths], os.path.join(tmp, "p.jsonl"), num_actors=2,
                          batch_size=batch_size, num_cpus=2)
    return {"images": summary.done, "images_per_s": summary.images_per_s, "actors": 2}


def main(argv: list[str]) -> int:
    """Run the chosen measurements and print a table (and JSON with --out)."""
    args = build_parser().parse_args(argv)
    import torch

    import handos

    if args.one_core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # inherited by the MediaPipe subprocess
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    what = set(args.what.split(","))
    paths = image_paths(args.images, args.limit)
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"torch {torch.__version__}, threads {torch.get_num_threads()}"
                                f"{', pinned to one core' if args.one_core else ''}", "images": args.images}
    cpu = handos.load(device="cpu")
    if "latency" in what:
        plain = handos.load(device="cpu", recall="off")  # MediaPipe's own path: no extra detector views
        models = {"default": cpu, "off": plain, "foundation": FoundationOnly(plain)}
        lat = time_latency(models, paths, mediapipe=args.vs == "mediapipe")
        results["handos_cpu_latency"] = lat["default"]
        results["handos_cpu_latency_recall_off"] = lat["off"]
        results["foundation_cpu_latency"] = lat["foundation"]  # MediaPipe's graph in torch, no decoder
        if "mediapipe" in lat:
            mp = lat["mediapipe"]
            results["mediapipe_cpu_latency"] = mp
            results["latency_ratio_handos_over_mediapipe"] = lat["default"]["median_ms"] / mp["median_ms"]
            results["latency_ratio_recall_off_over_mediapipe"] = lat["off"]["median_ms"] / mp["median_ms"]
            results["latency_ratio_foundation_over_mediapipe"] = lat["foundation"]["median_ms"] / mp["median_ms"]
            results["latency_block_ratios"] = {k: lat[k]["block_ratio"] for k in models}  # paired per block
    if "throughput" in what:
        time_throughput(cpu, paths[: 2 * args.batch_size], args.batch_size, workers=0)  # warm-up: traced shapes
        results["cpu_throughput_decode_pool"] = time_throughput(cpu, paths, args.batch_size, workers=2)
        results["cpu_throughput_inline_decode"] = time_throughput(cpu, paths, args.batch_size, workers=0)
    if "ray" in what:
        results["ray_cpu_throughput"] = time_ray(paths, args.batch_size)
    if torch.cuda.is_available() and args.device != "cpu":
        gpu = handos.load(device="cuda")
        results["cuda_latency"] = time_latency({"cuda": gpu}, paths)["cuda"]
        for bs in (16, 64):
            results[f"cuda_throughput_b{bs}_decode_pool"] = time_throughput(gpu, paths * max(1, 256 // len(paths)), bs, workers=4)
        results["cuda_throughput_b64_inline_decode"] = time_throughput(gpu, paths * max(1, 256 // len(paths)), 64, workers=0)
    if "video" in what:
        from handos.video.bench import bench_clip

        for hands in (1, 2):
            results[f"clip_640x480_{hands}hand_cpu"] = bench_clip(cpu, n_frames=30, hands=hands)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0
