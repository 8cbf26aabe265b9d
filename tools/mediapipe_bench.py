"""Time MediaPipe Hands on images (runs in the MediaPipe reference venv; no handos import).

usage: .venv-mediapipe/bin/python tools/mediapipe_bench.py IMAGE... --out times.json
       .venv-mediapipe/bin/python tools/mediapipe_bench.py IMAGE... --serve
With --serve it prints "ready", then answers each stdin line "START STOP" by timing images START..STOP-1
(decode with OpenCV + one `process` call each, timed together: handos' figures include its decoding too)
and printing {"seconds": [...], "hands": n} as one JSON line; so `handos bench`
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
paths = args.images  # each image is read inside the timed region, as handos bench does


def timed(hands, block):
    """Seconds per image (decode + process) and hands found over a block of image paths."""
    times, found = [], 0
    for path in block:
        start = time.perf_counter()
        res = hands.process(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB))
        times.append(time.perf_counter() - start)
        found += len(res.multi_hand_landmarks or [])
    return times, found


with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                              min_detection_confidence=0.5) as hands:
    timed(hands, paths[:5])  # warm-up
    if args.serve:
        print("ready", flush=True)
        for line in sys.stdin:
            start, stop = (int(x) for x in line.split())
            times, found = timed(hands, paths[start:stop])
            print(json.dumps({"seconds": times, "hands": found}), flush=True)
    else:
        times, found = [], 0
        for _ in range(args.repeat):
            t, f = timed(hands, paths)
            times += t
            found += f
        json.dump({"seconds": times, "hands": found // args.repeat}, open(args.out, "w"))
