"""Time MediaPipe Hands on images (runs in the MediaPipe reference venv; no handos import).

usage: .venv-mediapipe/bin/python tools/mediapipe_bench.py IMAGE... --out times.json
       .venv-mediapipe/bin/python tools/mediapipe_bench.py IMAGE... --serve
With --serve it prints "ready", then answers each stdin line "START STOP" by timing images START..STOP-1
(one `process` call each) and printing {"seconds": [...], "hands": n} as one JSON line; so `handos bench`
can interleave MediaPipe's blocks with its own on a machine whose speed drifts.
"""
import argparse
import json
import sys
import time

import cv2
import mediapipe as mp

parser = argparse.ArgumentParser()
parser.add_argument("images", nargs="+")
parser.add_argument("--out")
parser.add_argument("--repeat", type=int, default=2)
parser.add_argument("--serve", action="store_true")
args = parser.parse_args()
rgbs = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in args.images]


def timed(hands, block):
    """Seconds per image and hands found over a block of images."""
    times, found = [], 0
    for rgb in block:
        start = time.perf_counter()
        res = hands.process(rgb)
        times.append(time.perf_counter() - start)
        found += len(res.multi_hand_landmarks or [])
    return times, found


with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                              min_detection_confidence=0.5) as hands:
    timed(hands, rgbs[:5])  # warm-up
    if args.serve:
        print("ready", flush=True)
        for line in sys.stdin:
            start, stop = (int(x) for x in line.split())
            times, found = timed(hands, rgbs[start:stop])
            print(json.dumps({"seconds": times, "hands": found}), flush=True)
    else:
        times, found = [], 0
        for _ in range(args.repeat):
            t, f = timed(hands, rgbs)
            times += t
            found += f
        json.dump({"seconds": times, "hands": found // args.repeat}, open(args.out, "w"))
