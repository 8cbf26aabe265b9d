"""Time MediaPipe Hands on images (runs in the MediaPipe reference venv; no handos import).

usage: .venv-mediapipe/bin/python tools/mediapipe_bench.py IMAGE... --out times.json
"""
import argparse
import json
import time

import cv2
import mediapipe as mp

parser = argparse.ArgumentParser()
parser.add_argument("images", nargs="+")
parser.add_argument("--out", required=True)
parser.add_argument("--repeat", type=int, default=1)
args = parser.parse_args()
rgbs = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in args.images]
times, found = [], 0
with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                              min_detection_confidence=0.5) as hands:
    hands.process(rgbs[0])  # warm-up
    for _ in range(args.repeat):
        for rgb in rgbs:
            start = time.perf_counter()
            res = hands.process(rgb)
            times.append(time.perf_counter() - start)
            found += len(res.multi_hand_landmarks or [])
json.dump({"seconds": times, "hands": found}, open(args.out, "w"))
