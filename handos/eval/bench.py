"""Speed measurements behind `handos bench`: latency and throughput, as ratios against references run alongside.

MediaPipe's own runtime is timed in a separate interpreter (one with `mediapipe` installed) running
`mediapipe_worker.py` from this folder, which does not import handos.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from handos.errors import InputError

MEDIAPIPE_WORKER = Path(__file__).with_name("mediapipe_worker.py")
# a source checkout (not an installed wheel): its MediaPipe reference venv and the real data next to it
_CHECKOUT = Path(__file__).resolve().parents[2]
_CHECKOUT_MEDIAPIPE_PYTHON = _CHECKOUT / ".venv-mediapipe" / "bin" / "python"
_CHECKOUT_REALDATA = _CHECKOUT.parent / "shared" / "realdata"
REALDATA_IMAGES = Path("ge2019_realworld") / "images"  # the default image set, under HANDOS_REALDATA


def default_images() -> str:
    """The default --images folder: $HANDOS_REALDATA/ge2019_realworld/images, else a source checkout's copy."""
    env = os.environ.get("HANDOS_REALDATA")
    if env:
        return str(Path(env) / REALDATA_IMAGES)
    if (_CHECKOUT_REALDATA / REALDATA_IMAGES).is_dir():
        return str(_CHECKOUT_REALDATA / REALDATA_IMAGES)
    raise InputError("no images to benchmark on: pass --images DIR (or set HANDOS_REALDATA to the real-data folder)")


def mediapipe_python(given: str | None = None) -> str | None:
    """MediaPipe's interpreter: `given`, else $HANDOS_MEDIAPIPE_PYTHON, else a source checkout's .venv-mediapipe."""
    choice = given or os.environ.get("HANDOS_MEDIAPIPE_PYTHON")
    if choice:
        if not Path(choice).is_file():
            raise InputError(f"{choice}: no such Python for MediaPipe (pass --mediapipe-python or set HANDOS_MEDIAPIPE_PYTHON)")
        return choice
    return str(_CHECKOUT_MEDIAPIPE_PYTHON) if _CHECKOUT_MEDIAPIPE_PYTHON.is_file() else None


def image_paths(folder: str, limit: int) -> list[str]:
    """The first `limit` images of a folder (sorted)."""
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


def latency_summary(times: list[float], hands: int, images: int) -> dict:
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


def time_latency(models: dict, paths: list[str], mediapipe: str | None = None, rounds: int = 2, block: int = 10) -> dict:
    """End-to-end per-image latency (decode + foundation + decoder, batch size 1) of each model, and of MediaPipe.

    The runs are interleaved in blocks of `block` images (model A, model B, MediaPipe, next block, ...; `rounds`
    passes over `paths`) so that all see the same machine: on a shared VM the speed drifts by +-30 % within
    minutes, and separate runs minutes apart gave ratios from 1.7 to 2.3 for the same code.
    `mediapipe`: the Python interpreter to time MediaPipe Hands with (see `mediapipe_python`), or None.
    Returns {name: {images, hands, median_ms, p90_ms}} (+ "mediapipe" when asked); with
    MediaPipe, each model also gets `block_ratio`: the median over blocks of (its median / MediaPipe's median in
    the same block), which pairs the runtimes block by block and so drops most of the drift between blocks.
    """
    for m in models.values():  # warm-up: traces, allocator, caches
        _block_times(m, paths[:5])
    server = start_mediapipe(mediapipe, paths) if mediapipe else None
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
    out = {k: latency_summary(v, hands[k] // rounds, len(paths)) for k, v in times.items()}
    if server:
        mp = np.asarray(block_medians["mediapipe"])
        for name in models:
            out[name]["block_ratio"] = float(np.median(np.asarray(block_medians[name]) / mp))
    return out


def start_mediapipe(python: str, paths: list[str]) -> subprocess.Popen:
    """MediaPipe Hands under the interpreter `python`, serving timed blocks of `paths`."""
    return await_ready(spawn_mediapipe(python, paths), python)


def spawn_mediapipe(python: str, paths: list[str]) -> subprocess.Popen:
    """Start MediaPipe Hands' server under `python` on `paths` (it says "ready" once loaded and warm)."""
    return subprocess.Popen([python, str(MEDIAPIPE_WORKER), *paths, "--serve"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def await_ready(proc: subprocess.Popen, python: str) -> subprocess.Popen:
    """`proc` once it says "ready" (InputError, and the server killed, when it does not)."""
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise InputError(f"MediaPipe did not start under {python} (it needs the mediapipe package: pip install mediapipe)")
    return proc


def time_mediapipe_throughput(python: str, paths: list[str], processes: int = 2) -> dict:
    """Images/s of MediaPipe Hands run in `processes` processes at once (each on its share of `paths`, decode
    included): MediaPipe's way to keep several cores busy, against which `handos predict`'s throughput is set.

    images_per_s: from the first request to the last answer, the servers started and warm; startup_s: starting
    them all at once until each says ready (interpreter, mediapipe import, graph, a 5-image warm-up);
    images_per_s_with_startup: the images over both.
    """
    shares = [paths[i::processes] for i in range(processes)]
    start = time.perf_counter()
    servers = [spawn_mediapipe(python, share) for share in shares if share]
    try:
        for server in servers:
            await_ready(server, python)
        startup = time.perf_counter() - start
        start = time.perf_counter()
        for server, share in zip(servers, shares):
            server.stdin.write(f"0 {len(share)}\n")
            server.stdin.flush()
        hands = sum(json.loads(server.stdout.readline())["hands"] for server in servers)
        wall = time.perf_counter() - start
    finally:
        for server in servers:
            if server.poll() is None:
                server.stdin.close()
            server.wait(timeout=60)
    return {"images": len(paths), "hands": hands, "images_per_s": len(paths) / wall, "processes": len(servers),
            "startup_s": startup, "images_per_s_with_startup": len(paths) / (startup + wall)}


def time_throughput(model, paths: list[str], batch_size: int, workers: int = 2, processes: int = 1,
                    runtime: str | None = None) -> dict:
    """Images/s of `handos predict`'s runner: in this process with `model` (decode pool of `workers` threads, 0 =
    inline decode), or with `processes` > 1 in that many worker processes (`model` unused), keys then as in
    time_mediapipe_throughput: images_per_s with the workers started and warm (a 5-image batch each first, as
    MediaPipe's servers warm up), startup_s (start, model loads, that warm-up) and images_per_s_with_startup."""
    from handos.batch.parallel import run_images_parallel
    from handos.batch.runner import run_images
    from handos.batch.workers import WorkerOptions, WorkerPool
    from handos.io.manifest import WorkItem
    from handos.io.records import RecordWriter

    items = [WorkItem(p, p) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        writer = RecordWriter(os.path.join(tmp, "p.jsonl"))
        if processes <= 1:
            summary = run_images(model, items, writer, batch_size=batch_size, workers=workers)
            return {"images": summary.done, "images_per_s": summary.images_per_s, "workers": workers,
                    "batch_size": batch_size}
        start = time.perf_counter()
        with WorkerPool(processes, WorkerOptions(runtime=runtime)) as pool:
            for _ in pool.run([items[:5]] * processes):  # one warm-up batch per worker
                pass
            startup = time.perf_counter() - start
            summary = run_images_parallel(pool, items, writer, batch_size=batch_size)
    return {"images": summary.done, "hands": summary.hands, "images_per_s": summary.images_per_s,
            "processes": processes, "batch_size": batch_size, "startup_s": startup,
            "images_per_s_with_startup": summary.done / (startup + summary.seconds)}


def median_of_rounds(rounds: list[dict]) -> dict:
    """One throughput figure from several runs: the first run's counts, medians of the rates and start-up, and
    every run's images/s (`rounds_images_per_s`, to show the spread)."""
    out = dict(rounds[0])
    for key in ("images_per_s", "startup_s", "images_per_s_with_startup"):
        out[key] = float(np.median([r[key] for r in rounds]))
    out["rounds_images_per_s"] = [round(r["images_per_s"], 1) for r in rounds]
    return out


def time_ray(paths: list[str], batch_size: int) -> dict:
    """Images/s through Ray Data with 2 CPU actors on a local Ray instance."""
    from handos.batch.ray import run_ray
    from handos.io.manifest import WorkItem

    with tempfile.TemporaryDirectory() as tmp:
        summary = run_ray([WorkItem(p, p) for p in paths], os.path.join(tmp, "p.jsonl"), num_actors=2,
                          batch_size=batch_size, num_cpus=2)
    return {"images": summary.done, "images_per_s": summary.images_per_s, "actors": 2}


def run_bench(images: str, what: set[str], limit: int = 50, mediapipe: str | None = None, device: str = "auto",
              threads: int | None = None, one_core: bool = False, batch_size: int = 16, runtime: str = "auto",
              throughput_rounds: int = 3) -> dict:
    """Run the chosen measurements (`what` among latency, throughput, ray, video) and return the results.

    `mediapipe`: MediaPipe's Python interpreter to time it alongside (None: handos only). `threads`: torch's
    and LiteRT's CPU threads. `runtime`: what runs the foundation's nets on the CPU (handos.load's runtime).
    `throughput_rounds`: runs of handos' worker processes and of MediaPipe's, alternated (medians reported).
    """
    import platform

    import torch

    import handos

    if one_core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # inherited by the MediaPipe subprocess
    if threads is not None:
        torch.set_num_threads(threads)
    paths = image_paths(images, limit)
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"torch {torch.__version__}, threads {torch.get_num_threads()}"
                                f"{', pinned to one core' if one_core else ''}", "images": images}
    cpu = handos.load(device="cpu", runtime=runtime)  # LiteRT threads: torch's count, set above
    results["runtime"] = cpu.foundation.runtimes
    if "latency" in what:
        plain = handos.load(device="cpu", recall="off", runtime=runtime)  # MediaPipe's own path: no extra views
        models = {"default": cpu, "off": plain, "foundation": FoundationOnly(plain)}
        lat = time_latency(models, paths, mediapipe=mediapipe)
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
        time_throughput(cpu, paths[: 2 * batch_size], batch_size, workers=0)  # warm-up: traced shapes
        results["cpu_throughput_decode_pool"] = time_throughput(cpu, paths, batch_size, workers=2)  # one process
        results["cpu_throughput_inline_decode"] = time_throughput(cpu, paths, batch_size, workers=0)
        # `handos predict --processes 2` (both cores busy) and MediaPipe in two processes, alternated run by run
        ours, theirs = [], []
        for _ in range(throughput_rounds):
            ours.append(time_throughput(None, paths, batch_size, processes=2, runtime=runtime))
            if mediapipe:
                theirs.append(time_mediapipe_throughput(mediapipe, paths, processes=2))
        results["cpu_throughput_processes"] = median_of_rounds(ours)
        if mediapipe:
            results["mediapipe_throughput_2_processes"] = median_of_rounds(theirs)
            for key, rate in (("throughput_ratio_handos_over_mediapipe", "images_per_s"),  # warm, as said above
                              ("throughput_ratio_with_startup_handos_over_mediapipe", "images_per_s_with_startup")):
                results[key] = float(np.median([a[rate] / b[rate] for a, b in zip(ours, theirs)]))  # paired runs
            results["throughput_ratio_one_process_over_mediapipe"] = (
                results["cpu_throughput_decode_pool"]["images_per_s"]
                / results["mediapipe_throughput_2_processes"]["images_per_s"])
    if "ray" in what:
        results["ray_cpu_throughput"] = time_ray(paths, batch_size)
    if torch.cuda.is_available() and device != "cpu":
        gpu = handos.load(device="cuda")
        results["cuda_latency"] = time_latency({"cuda": gpu}, paths)["cuda"]
        for bs in (16, 64):
            results[f"cuda_throughput_b{bs}_decode_pool"] = time_throughput(gpu, paths * max(1, 256 // len(paths)), bs, workers=4)
        results["cuda_throughput_b64_inline_decode"] = time_throughput(gpu, paths * max(1, 256 // len(paths)), 64, workers=0)
    if "video" in what:
        from handos.video.bench import bench_clip

        for hands in (1, 2):
            results[f"clip_640x480_{hands}hand_cpu"] = bench_clip(cpu, n_frames=30, hands=hands)
    return results
