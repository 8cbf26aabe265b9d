"""`python -m handos train --config CONFIG [--resume] [--steps N] [--out DIR] [--device D]`.

Multi-GPU: `torchrun --nproc_per_node G -m handos train --config CONFIG` (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import json
import os


def main(argv: list[str]) -> int:
    """Parse arguments and train."""
    from handos.train.loop import train

    ap = argparse.ArgumentParser(prog="handos train", description="Train the HandOS decoder on synthetic hands.")
    ap.add_argument("--config", required=True, help="TOML config (see handos/train/configs/default.toml)")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output folder")
    ap.add_argument("--steps", type=int, help="override [train] steps")
    ap.add_argument("--batch-size", type=int, dest="batch_size", help="override [train] batch_size")
    ap.add_argument("--out", dest="out_dir", help="override [train] out_dir")
    ap.add_argument("--device", help="override [train] device (auto|cpu|cuda)")
    ap.add_argument("--threads", type=int, help="override [train] threads (CPU)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "out_dir", "device", "threads")}
    summary = train(args.config, resume=args.resume, overrides=overrides, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary (rank 0's)
        print(json.dumps(summary, default=str))
    return 0
