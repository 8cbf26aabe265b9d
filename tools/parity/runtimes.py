"""LiteRT vs torch runtimes of the foundation on the real sets: same hands, landmarks, eval figures.

    .venv-ci/bin/python tools/parity/runtimes.py [--realdata DIR] [--sets ge2019_realworld,rhd] [--out runtimes.json]

Per set: hands found (default recall "fast") and their handedness with each runtime, the largest landmark
difference between runtimes over hands found by both, and `handos eval`'s figures with each runtime (the
same images, cameras and matching), plus the largest absolute difference of any figure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

METRICS = ("recall", "false_positives", "pck2d@0.05", "pck2d@0.1", "mean_err_2d_px", "pa_mpjpe_mm", "mpjpe_rr_mm",
           "root_depth_err_mm", "handedness_acc")


def compare_set(folder: Path, models: dict) -> dict:
    """Foundation hands per image under each runtime, and the eval report of each model, for one set."""
    from handos.eval.run import evaluate, load_annotations
    from handos.io.images import load_image

    ann = load_annotations(folder / "derived_annotations.json")
    found = {k: 0 for k in models}
    same_count, same_side, max_px, n_pairs = 0, 0, 0.0, 0
    for im in ann["images"]:
        rgb = load_image(folder / im["file"]).rgb
        outs = {k: m.foundation.detect([rgb], max_hands=m.max_hands) for k, m in models.items()}
        a, b = outs["torch"], outs["litert"]
        for k, o in outs.items():
            found[k] += len(o)
        same_count += len(a) == len(b)
        if len(a) == len(b) and len(a):
            same_side += bool(((a.handedness_right >= 0.5) == (b.handedness_right >= 0.5)).all())
            max_px = max(max_px, float((a.joints_2d - b.joints_2d).abs().max()))
            n_pairs += len(a)
        elif len(a) == len(b):
            same_side += 1
    reports = {}
    for k, m in models.items():
        r = evaluate(ann, m, folder)
        reports[k] = {name: r.get(name) for name in METRICS if r.get(name) is not None}
    diff = {name: abs(reports["torch"][name] - reports["litert"][name]) for name in reports["torch"]
            if name in reports["litert"]}
    return {"images": len(ann["images"]), "hands": found, "images_same_hand_count": same_count,
            "images_same_handedness": same_side, "hands_compared": n_pairs, "max_landmark_diff_px": max_px,
            "eval": reports, "max_eval_diff": max(diff.values()) if diff else 0.0}


def main(argv: list[str] | None = None) -> int:
    """Compare the runtimes on every set (or --sets) and print (and --out) the table as JSON."""
    import handos

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--realdata", default=os.environ.get("HANDOS_REALDATA", str(REPO.parent / "shared" / "realdata")))
    ap.add_argument("--sets", default=None, help="comma list of set folders (default: every set with annotations)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    root = Path(args.realdata)
    sets = args.sets.split(",") if args.sets else sorted(p.parent.name for p in root.glob("*/derived_annotations.json"))
    models = {rt: handos.load(device="cpu", runtime=rt) for rt in ("torch", "litert")}
    results = {}
    for name in sets:
        t0 = time.perf_counter()
        results[name] = compare_set(root / name, models)
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(results[name]), flush=True)
    worst = {"max_landmark_diff_px": max(r["max_landmark_diff_px"] for r in results.values()),
             "max_eval_diff": max(r["max_eval_diff"] for r in results.values()),
             "all_same_hands": all(r["images_same_hand_count"] == r["images"] == r["images_same_handedness"]
                                   for r in results.values())}
    print("worst", json.dumps(worst))
    if args.out:
        Path(args.out).write_text(json.dumps({"sets": results, "worst": worst}, indent=1) + "\n")
    return 0 if worst["all_same_hands"] and worst["max_landmark_diff_px"] < 0.5 else 1


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
