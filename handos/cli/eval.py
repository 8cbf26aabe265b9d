"""`handos eval ANNOTATIONS.json`: run the model on every annotated image and score it (logic: handos.eval.run)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from handos.errors import InputError
from handos.eval.report import format_report
from handos.eval.run import PROMPTS, Predictor, evaluate, load_annotations, read_jsonl, score_records
from handos.foundation import RECALL_MODES, RUNTIME_HELP, RUNTIMES


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `handos eval`."""
    p = argparse.ArgumentParser(prog="handos eval", description="Evaluate on a derived_annotations.json file.")
    p.add_argument("annotations", help="derived_annotations.json; image paths are relative to its folder")
    p.add_argument("--out", help="write the report JSON here")
    p.add_argument("--preds", help="write predictions (handos.prediction/1 JSONL) here; default: next to --out")
    p.add_argument("--from-preds", metavar="JSONL", help="score these saved predictions instead of running a model")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--weights", default=None, help="weights path or Hub repo id (default: the shipped weights)")
    p.add_argument("--recall", choices=RECALL_MODES, default="fast",
                   help="detector effort (see handos.load); off = MediaPipe's own path")
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help=RUNTIME_HELP)
    p.add_argument("--foundation-only", action="store_true", help="score the frozen foundation's own joints (MediaPipe port)")
    p.add_argument("--prompt-boxes", choices=PROMPTS, default=None,
                   help="prompt the model with boxes instead of detecting: gt = each GT hand's tight 2D joint box, "
                        "grown by --grow (one hand per box; same matching and metrics)")
    p.add_argument("--grow", type=float, default=0.2,
                   help="with --prompt-boxes: scale each box side by 1 + GROW about its centre (default 0.2)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=8, help="images per predict_batch call (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    """Entry point of `handos eval`: print the report (and write it with --out)."""
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    if args.prompt_boxes and (args.foundation_only or args.from_preds):
        raise InputError("--prompt-boxes runs the full pipeline: drop --foundation-only / --from-preds")
    ann_path = Path(args.annotations)
    ann = load_annotations(ann_path)
    if args.from_preds:
        report = score_records(ann, read_jsonl(args.from_preds), limit=args.limit)
    else:
        predictor = _make_predictor(args)
        preds_path = Path(args.preds) if args.preds else (Path(args.out).with_suffix(".preds.jsonl") if args.out else None)
        fh = None
        try:
            if preds_path is not None:
                preds_path.parent.mkdir(parents=True, exist_ok=True)
                fh = preds_path.open("w")
            report = evaluate(ann, predictor, ann_path.parent, preds_out=fh, limit=args.limit, batch_size=args.batch_size, progress=not args.quiet,
                              prompt_boxes=args.prompt_boxes, grow=args.grow)
        finally:
            if fh is not None:
                fh.close()
        if preds_path is not None:
            report["predictions_file"] = str(preds_path)
    report["annotations"] = str(ann_path)
    report["mode"] = "foundation-only" if args.foundation_only else ("saved-predictions" if args.from_preds else "pipeline")
    if args.prompt_boxes:
        report["mode"] = f"pipeline, box prompts ({args.prompt_boxes}, grow {args.grow:g})"
    print(format_report(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.out}")
    return 0


def _make_predictor(args: argparse.Namespace) -> Predictor:
    """The full pipeline, or the foundation alone with --foundation-only."""
    if args.foundation_only:
        from handos.eval.adapters import FoundationPredictor

        return FoundationPredictor(device=args.device, recall=args.recall, runtime=args.runtime or "auto")
    import handos

    return handos.load(weights=args.weights, device=args.device, recall=args.recall, runtime=args.runtime)
