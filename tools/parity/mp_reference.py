"""Reference outputs from MediaPipe itself; runs ONLY in the mediapipe venv (.venv-mediapipe).

Made by .ci/setup_mediapipe_venv.sh (mediapipe==0.10.21 + ai-edge-litert). Never imported by
handos; the tests call it with subprocess and read the .npz it writes.

    python tools/parity/mp_reference.py nets --palm palm.npy --landmark lm.npy --out raw.npz
        palm.npy (N,192,192,3) float32 in [-1,1], lm.npy (N,224,224,3) float32 in [0,1] (NHWC, as
        the tflite graphs take them); writes palm_regressors (N,2016,18), palm_scores (N,2016,1),
        lm_landmarks (N,63), lm_presence (N,1), lm_handedness (N,1), lm_world (N,63), run by the
        LiteRT interpreter on the tflite files of the installed mediapipe package.
    python tools/parity/mp_reference.py hands --out hands.npz IMG [IMG ...]
        MediaPipe Hands (static_image_mode=True, max_num_hands=2, model_complexity=1,
        min_detection_confidence=0.5) end to end; per image i: count[i], and stacked over all hands:
        image_index (K,), landmarks_px (K,21,3) (x, y in pixels, z MediaPipe's normalised z * width),
        world (K,21,3) m, handedness_label (K,) 'Left'/'Right', handedness_score (K,).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def _model_path(rel: str) -> str:
    import mediapipe

    return str(Path(mediapipe.__file__).parent / rel)


def _run_tflite(path: str, batch: np.ndarray) -> list[np.ndarray]:
    """Run a tflite file one sample at a time; return its outputs stacked, in graph output order."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = it.get_output_details()  # graph output order (Identity, Identity_1, ...)
    res: list[list[np.ndarray]] = [[] for _ in outs]
    for x in batch:
        it.set_tensor(inp["index"], x[None].astype(np.float32))
        it.invoke()
        for j, o in enumerate(outs):
            res[j].append(it.get_tensor(o["index"])[0].copy())
    return [np.stack(r) for r in res]


def cmd_nets(args: argparse.Namespace) -> None:
    out: dict[str, np.ndarray] = {}
    if args.palm:
        reg, score = _run_tflite(_model_path("modules/palm_detection/palm_detection_full.tflite"), np.load(args.palm))
        out.update(palm_regressors=reg, palm_scores=score)
    if args.landmark:
        lm, pres, hand, world = _run_tflite(_model_path("modules/hand_landmark/hand_landmark_full.tflite"),
                                            np.load(args.landmark))
        out.update(lm_landmarks=lm, lm_presence=pres, lm_handedness=hand, lm_world=world)
    np.savez(args.out, **out)


def cmd_hands(args: argparse.Namespace) -> None:
    import cv2
    import mediapipe as mp

    idx, lms, worlds, labels, scores, counts, times = [], [], [], [], [], [], []
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                                  min_detection_confidence=0.5) as hands:
        for i, f in enumerate(args.images):
            bgr = cv2.imread(f, cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"cannot read {f}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            t = time.perf_counter()
            r = hands.process(rgb)
            times.append(time.perf_counter() - t)
            n = len(r.multi_hand_landmarks or [])
            counts.append(n)
            for k in range(n):
                idx.append(i)
                lms.append([[p.x * w, p.y * h, p.z * w] for p in r.multi_hand_landmarks[k].landmark])
                worlds.append([[p.x, p.y, p.z] for p in r.multi_hand_world_landmarks[k].landmark])
                c = r.multi_handedness[k].classification[0]
                labels.append(c.label)
                scores.append(c.score)
    np.savez(args.out, count=np.array(counts), image_index=np.array(idx, dtype=np.int64),
             landmarks_px=np.array(lms, dtype=np.float64).reshape(-1, 21, 3),
             world=np.array(worlds, dtype=np.float64).reshape(-1, 21, 3),
             handedness_label=np.array(labels, dtype=str), handedness_score=np.array(scores),
             seconds=np.array(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("nets")
    a.add_argument("--palm")
    a.add_argument("--landmark")
    a.add_argument("--out", required=True)
    b = sub.add_parser("hands")
    b.add_argument("--out", required=True)
    b.add_argument("images", nargs="+")
    args = ap.parse_args(argv)
    {"nets": cmd_nets, "hands": cmd_hands}[args.cmd](args)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
