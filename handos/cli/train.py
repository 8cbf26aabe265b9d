"""`python -m handos train --config CONFIG [--resume] [--steps N] [--out DIR] [--device D]`, and
`python -m handos train --finetune DATA --out DIR [--foundation frozen|landmark|all] [--grayscale] ...`.

Multi-GPU: `torchrun --nproc_per_node G -m handos train --config CONFIG` (DistributedDataParallel).
Fine-tuning (handos.train.finetune) resumes by itself: rerun the same command after a kill.
"""
from __future__ import annotations

import argparse
import json
import os

from handos.foundation import MAX_LANDMARK_PASSES


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `handos train`."""
    ap = argparse.ArgumentParser(prog="handos train", description="Train the HandOS decoder on synthetic hands, "
                                 "or fine-tune on people's labels (--finetune).")
    ap.add_argument("--config", help="TOML config (see handos/train/configs/default.toml)")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output folder")
    ap.add_argument("--steps", type=int, help="override [train] steps; with --finetune: the decoder's steps")
    ap.add_argument("--batch-size", type=int, dest="batch_size", help="override [train] batch_size")
    ap.add_argument("--out", dest="out_dir", help="override [train] out_dir; with --finetune: the weights folder to write")
    ap.add_argument("--device", help="override [train] device (auto|cpu|cuda)")
    ap.add_argument("--threads", type=int, help="override [train] threads (CPU)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ft = ap.add_argument_group("fine-tuning")
    ft.add_argument("--finetune", metavar="DATA", help="labels to fine-tune on: a `handos label --export` file "
                    "or a derived_annotations.json (image paths relative to it)")
    ft.add_argument("--weights", help="start from these weights (folder or file; default: the shipped ones)")
    ft.add_argument("--foundation", choices=("frozen", "landmark", "all"), default="frozen",
                    help="also fine-tune the landmark net (landmark) and the palm detector (all); default frozen")
    ft.add_argument("--val-frac", type=float, default=0.25, help="held-out fraction of DATA for before/after metrics")
    ft.add_argument("--seed", type=int, default=0, help="seed of the split and the training draws")
    ft.add_argument("--grayscale", action="store_true", help="train and measure on grey versions of the images")
    ft.add_argument("--data-licence", help="the labels' licence, written into the model card")
    ft.add_argument("--landmark-steps", type=int, help="landmark-net steps (default: FinetuneConfig's)")
    ft.add_argument("--palm-steps", type=int, help="palm-detector steps (default: FinetuneConfig's)")
    ft.add_argument("--landmark-passes", type=int, choices=range(MAX_LANDMARK_PASSES + 1), metavar="N",
                    help="extra landmark passes the weights ask for at inference (default: 1 with a fine-tuned "
                         "landmark net, else the starting weights')")
    ft.add_argument("--refine-2d", choices=("on", "off"), help="report the decoder's refined 2D joints (default: "
                    "off with a fine-tuned landmark net, else the starting weights')")
    ft.add_argument("--max-steps", type=int, help="stop after this many steps in this run (rerun to continue)")
    return ap


def main(argv: list[str]) -> int:
    """Parse arguments and train (or fine-tune)."""
    from handos.errors import ConfigError

    args = build_parser().parse_args(argv)
    if args.finetune:
        return finetune_main(args)
    if not args.config:
        raise ConfigError("handos train needs --config CONFIG (synthetic training) or --finetune DATA --out DIR")
    from handos.train.loop import train

    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "out_dir", "device", "threads")}
    summary = train(args.config, resume=args.resume, overrides=overrides, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary (rank 0's)
        print(json.dumps(summary, default=str))
    return 0


def finetune_main(args: argparse.Namespace) -> int:
    """`--finetune DATA --out DIR`: run or resume, print the before/after table and the report path."""
    from handos.errors import ConfigError
    from handos.train.finetune import FinetuneConfig, before_after_table, finetune

    if not args.out_dir:
        raise ConfigError("--finetune needs --out DIR (the weights folder to write)")
    kw = {"decoder_steps": args.steps, "device": args.device, "threads": args.threads,
          "decoder_batch": args.batch_size, "landmark_steps": args.landmark_steps, "palm_steps": args.palm_steps,
          "landmark_passes": args.landmark_passes,
          "refine_2d": None if args.refine_2d is None else args.refine_2d == "on"}
    cfg = FinetuneConfig(data=args.finetune, out=args.out_dir, weights=args.weights, foundation=args.foundation,
                         val_frac=args.val_frac, seed=args.seed, grayscale=args.grayscale,
                         data_licence=args.data_licence, **{k: v for k, v in kw.items() if v is not None})
    report = finetune(cfg, progress=not args.no_progress, max_steps=args.max_steps)
    if report.get("stopped"):
        print(f"stopped after --max-steps; rerun the same command to continue ({report['out']})")
        return 0
    print(before_after_table(report["before"], report["after"]))
    print(json.dumps({k: report[k] for k in ("split", "steps", "seconds", "version")}))
    print(f"weights written to {args.out_dir} (report: {args.out_dir}/finetune_report.json)")
    return 0
