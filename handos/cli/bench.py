"""`handos bench`: latency and throughput, as ratios against references measured in the same run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from handos.errors import InputError
from handos.foundation import RUNTIME_HELP, RUNTIMES


def build_parser() -> argparse.ArgumentParser:
    """The bench verb's options."""
    p = argparse.ArgumentParser(prog="handos bench", description="Measure handos speed (CPU and, when present, CUDA).")
    p.add_argument("--images", default=None,
                   help="folder of images to time on (default: $HANDOS_REALDATA/ge2019_realworld/images)")
    p.add_argument("--limit", type=int, default=50, help="images to use")
    p.add_argument("--vs", choices=("mediapipe",), default=None, help="also time MediaPipe's own runtime on the same images")
    p.add_argument("--mediapipe-python", default=None,
                   help="Python interpreter with the mediapipe package, for --vs mediapipe (default: "
                        "$HANDOS_MEDIAPIPE_PYTHON, else a source checkout's .venv-mediapipe)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch and of LiteRT's XNNPACK pool (default: torch's own choice, one per core, "
                        "which is what handos.load() users get; MediaPipe's XNNPACK runs one inference thread on desktop "
                        "Linux whatever this says)")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help=RUNTIME_HELP)
    p.add_argument("--one-core", action="store_true",
                   help="pin this process and MediaPipe's to one CPU core (MediaPipe's graph threads then stop "
                        "competing with its own inference thread: it runs faster that way on 2 cores)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--what", default="latency,throughput,video", help="comma list of latency,throughput,ray,video")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p


def main(argv: list[str]) -> int:
    """Run the chosen measurements and print them as JSON (and write them with --out)."""
    from handos.eval.bench import default_images, mediapipe_python, run_bench

    args = build_parser().parse_args(argv)
    mediapipe = None
    if args.vs == "mediapipe":
        mediapipe = mediapipe_python(args.mediapipe_python)
        if mediapipe is None:
            raise InputError("--vs mediapipe needs a Python with mediapipe: pass --mediapipe-python PATH "
                             "or set HANDOS_MEDIAPIPE_PYTHON")
    results = run_bench(args.images or default_images(), set(args.what.split(",")), limit=args.limit,
                        mediapipe=mediapipe, device=args.device, threads=args.threads, one_core=args.one_core,
                        batch_size=args.batch_size, runtime=args.runtime)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0
