"""Recall, false positives and PCK2D of the foundation's own joints on the real sets in $HANDOS_REALDATA.

    HANDOS_REALDATA=DIR python tools/parity/foundation_metrics.py [--no-boost] [--sets ge2019_realworld interhand26m ...]

Metrics as `handos eval` computes them: Hungarian matching on mean 2D joint distance, a
match needs that distance < 0.5 x the max side of the tight GT joint box; PCK2D@a over all labelled GT
joints with threshold a x that side (unmatched GT hands count as misses). A small stand-alone
measurement for the foundation (the full `handos eval` lives in handos/eval).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from handos.foundation.pipeline import Foundation, FoundationConfig  # noqa: E402

REALDATA = Path(os.environ.get("HANDOS_REALDATA", ""))


def evaluate(pred: list[np.ndarray], gts: list[list[np.ndarray]]) -> dict:
    """pred[i] (n,21,2), gts[i] list of (21,2) with NaN for unlabelled -> metrics dict."""
    hits = {0.05: 0, 0.1: 0}
    total = matched = n_gt = fp = 0
    errs = []
    for p, g in zip(pred, gts):
        n_gt += len(g)
        sides = [np.nanmax(np.nanmax(x, 0) - np.nanmin(x, 0)) for x in g]
        for x in g:
            total += int(np.isfinite(x[:, 0]).sum())
        if len(p) == 0 or len(g) == 0:
            fp += len(p)
            continue
        cost = np.array([[np.nanmean(np.linalg.norm(pp - gg, axis=1)) for gg in g] for pp in p])
        r, c = linear_sum_assignment(cost)
        used = 0
        for a, b in zip(r, c):
            if cost[a, b] < 0.5 * sides[b]:
                used += 1
                matched += 1
                d = np.linalg.norm(p[a] - g[b], axis=1)
                ok = np.isfinite(d)
                errs.append(d[ok].mean())
                for al in hits:
                    hits[al] += int((d[ok] <= al * sides[b]).sum())
        fp += len(p) - used
    return {"hands": n_gt, "found": matched, "recall": matched / max(n_gt, 1), "false_positives": fp,
            "pck2d@0.05": hits[0.05] / max(total, 1), "pck2d@0.1": hits[0.1] / max(total, 1),
            "mean_err_2d_px": float(np.mean(errs)) if errs else float("nan")}


def load_set(name: str):
    """Images (RGB) and GT joints of one realdata set."""
    ann = json.loads((REALDATA / name / "derived_annotations.json").read_text())
    imgs, gts = [], []
    for im in ann["images"]:
        imgs.append(cv2.cvtColor(cv2.imread(str(REALDATA / name / im["file"])), cv2.COLOR_BGR2RGB))
        gts.append([np.array([[np.nan, np.nan] if j is None else j for j in h["joints_2d"]], float)
                    for h in im["hands"]])
    return imgs, gts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-boost", action="store_true", help="FoundationConfig(recall_boost='off'): MediaPipe exactly")
    ap.add_argument("--recall", default="fast", help="recall_boost mode: off, fast, full, search")
    ap.add_argument("--sets", nargs="+", default=["ge2019_realworld", "interhand26m", "panoptic", "freihand",
                                                   "onehand10k", "rhd"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set-config", nargs="*", default=[], help="key=value FoundationConfig overrides")
    args = ap.parse_args(argv)
    if not os.environ.get("HANDOS_REALDATA"):
        ap.error("set HANDOS_REALDATA to the folder of the real sets")
    torch.set_num_threads(args.threads)
    def parse(k: str, v: str):
        d = getattr(FoundationConfig(), k)
        if k == "recall_boost":
            return v
        if isinstance(d, bool):
            return v.lower() in ("1", "true", "yes")
        return int(v) if d is None else type(d)(v)

    kw = {k: parse(k, v) for k, v in (s.split("=") for s in args.set_config)}
    kw.setdefault("recall_boost", "off" if args.no_boost else args.recall)
    cfg = FoundationConfig(**kw)
    f = Foundation.load("cpu", config=cfg)
    report = {}
    for s in args.sets:
        imgs, gts = load_set(s)
        t = time.perf_counter()
        out = f.detect(imgs)
        dt = time.perf_counter() - t
        pred = [out.joints_2d[out.per_image(i)].numpy() for i in range(len(imgs))]
        report[s] = evaluate(pred, gts) | {"s_per_image": dt / len(imgs)}
        print(s, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in report[s].items()}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
