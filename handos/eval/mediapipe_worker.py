"""Time MediaPipe Hands on images; run as a script under an interpreter with mediapipe (it never imports handos).

usage: PYTHON mediapipe_worker.py IMAGE... --out times.json
       PYTHON mediapipe_worker.py IMAGE... --serve
With --serve it prints "ready", then answers each stdin line "START STOP" by timing images START..STOP-1
(decode with OpenCV + one `process` call each, timed together: handos' figures include its decoding too)
and printing {"seconds": [...], "hands": n} as one JSON line; so `handos bench`
can interleave MediaPipe's blocks with its own on a machine whose speed drifts.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def timed(hands, block: list[str]) -> tuple[list[float], int]:
    """Seconds per image (decode + process) and hands found over a block of image paths."""
    import cv2

    times, found = [], 0
    for path in block:
        start = time.perf_counter()
        res = hands.process(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB))
        times.append(time.perf_counter() - start)
        found += len(res.multi_hand_landmarks or [])
    return times, found


def main() -> None:
    """Parse the command line and time (or serve timed blocks of) the images."""
    import mediapipe as mp

    parser = argparse.ArgumentParser()
    parser.add_argument("images", nargs="+")
    parser.add_argument("--out")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    paths = args.images  # each image is read inside the timed region, as handos bench does
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
            with open(args.out, "w") as fh:
                json.dump({"seconds": times, "hands": found // args.repeat}, fh)


if __name__ == "__main__":
    main()
