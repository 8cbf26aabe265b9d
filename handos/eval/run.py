"""Evaluation runs behind `handos eval`: run a model on every annotated image and score it.

The core is `evaluate(annotations, predictor, root)`, which takes any object with
`predict_batch(images, cameras) -> list[list[Hand]]`; `score_records` scores saved predictions instead.
The annotation format is derived_annotations.json: {"dataset", "images": [{"file", "camera"?, "hands":
[{"joints_2d": 21 x [x, y], ...}]}]}, image paths relative to the file's folder.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from handos.errors import InputError
from handos.eval.report import EvalAccumulator, GTHand, PredHand


class Predictor(Protocol):
    """What `evaluate` needs from a model (`boxes` only for box prompts: one [[x1, y1, x2, y2], ...] per image)."""

    def predict_batch(self, images: list, cameras: list | None = None, **kwargs: Any) -> list[list[Any]]: ...


PROMPTS = ("gt",)


def grown_box(box: np.ndarray, grow: float) -> np.ndarray:
    """A box (4,) xyxy with each side length scaled by (1 + grow) about its centre (grow 0.2: 10 % more per edge)."""
    c, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * (1.0 + grow)
    return np.concatenate([c - half, c + half])


def gt_prompt_boxes(hands: list[dict[str, Any]], grow: float, width: float, height: float) -> list[list[float]]:
    """Box prompts for an image's GT hands: each hand's tight box of its labelled 2D joints, grown by `grow`.

    A hand with fewer than two labelled joints (or a zero-size joint box) falls back to its `bbox_xyxy`;
    one with neither, or whose box lies outside the image, gets no prompt (it stays unmatched).
    """
    out = []
    for h in hands:
        j = np.array([[np.nan, np.nan] if p is None else p for p in h["joints_2d"]], dtype=np.float64)  # (21,2)
        j = j[np.isfinite(j).all(1)]
        box = np.r_[j.min(0), j.max(0)] if len(j) >= 2 else None
        if box is None or not (box[2] > box[0] and box[3] > box[1]):
            bb = h.get("bbox_xyxy")
            box = np.asarray(bb, dtype=np.float64) if bb is not None and len(bb) == 4 else None
        if box is None or not np.isfinite(box).all() or not (box[2] > box[0] and box[3] > box[1]):
            continue
        box = grown_box(box, grow)
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            continue
        out.append(box.tolist())
    return out


def load_annotations(path: str | Path) -> dict[str, Any]:
    """Read and check a derived_annotations.json file; InputError if unusable."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such annotation file (expected a derived_annotations.json)")
    try:
        ann = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(ann, dict) or not isinstance(ann.get("images"), list):
        raise InputError(f"{path}: no 'images' list; expected the derived_annotations.json format")
    for i, im in enumerate(ann["images"]):
        if not isinstance(im, dict) or "file" not in im or not isinstance(im.get("hands"), list):
            raise InputError(f"{path}: images[{i}] needs 'file' and a 'hands' list")
        for h in im["hands"]:
            if len(h.get("joints_2d") or []) != 21:
                raise InputError(f"{path}: images[{i}] ({im['file']}) has a hand without 21 joints_2d entries")
    return ann


def _batches(items: list, size: int) -> Iterator[list]:
    """Consecutive slices of `items` of length `size`."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def evaluate(
    annotations: dict[str, Any],
    predictor: Predictor,
    root: str | Path,
    preds_out: TextIO | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
    prompt_boxes: str | None = None,
    grow: float = 0.2,
) -> dict[str, Any]:
    """Run `predictor` on every annotated image (with its camera when given) and return the report dict.

    Images are read relative to `root` (the annotation file's folder). Predictions are written to
    `preds_out` as handos.prediction/1 JSON lines, one per image, as they come. With `prompt_boxes="gt"`
    the predictor gets box prompts instead of detecting: each GT hand's tight 2D joint box with each side
    scaled by (1 + grow) about its centre (`gt_prompt_boxes`); scoring is unchanged.
    """
    if prompt_boxes is not None and prompt_boxes not in PROMPTS:
        raise InputError(f"prompt_boxes must be one of {', '.join(PROMPTS)}, got {prompt_boxes!r}")
    if not (math.isfinite(grow) and grow > -1.0):
        raise InputError(f"grow must be a number above -1 (0.2 = each side 1.2 x as long), got {grow}")
    from handos.io.camera import Camera
    from handos.io.images import load_image
    from handos.io.schema import prediction_record

    images = annotations["images"][: limit if limit is not None else None]
    acc = EvalAccumulator()
    model_name = str(getattr(predictor, "version", type(predictor).__name__))
    t0 = time.perf_counter()
    bar = _progress(len(images), progress)
    for batch in _batches(images, max(1, batch_size)):
        loaded = []
        for im in batch:
            path = Path(root) / im["file"]
            if not path.is_file():
                raise InputError(f"{path}: image listed in the annotations is missing (paths are relative to the json's folder)")
            loaded.append(load_image(path))
        # the camera each image is evaluated with: given, else EXIF focal, else the default field of view
        cams = [Camera.from_any(im.get("camera"), li.width, li.height, li.focal_35mm) for im, li in zip(batch, loaded)]
        if prompt_boxes is None:
            results = predictor.predict_batch([li.rgb for li in loaded], cams)
        else:
            boxes = [gt_prompt_boxes(im["hands"], grow, li.width, li.height) for im, li in zip(batch, loaded)]
            results = predictor.predict_batch([li.rgb for li in loaded], cams, boxes=boxes)
        if len(results) != len(batch):
            raise InputError(f"predictor returned {len(results)} results for {len(batch)} images")
        for im, li, cam, hands in zip(batch, loaded, cams, results):
            acc.add_image([GTHand.from_dict(h) for h in im["hands"]], [PredHand.from_hand(h) for h in hands], im["file"])
            if preds_out is not None:
                rec = prediction_record(im["file"], li.width, li.height, cam.to_dict(), list(hands), model_name)
                preds_out.write(json.dumps(rec, separators=(",", ":")) + "\n")
                preds_out.flush()
        bar.update(len(batch))
    bar.close()
    report = _finish(acc, annotations, model_name)
    if prompt_boxes is not None:
        report["prompt_boxes"] = f"{prompt_boxes} (tight 2D joint box, each side x{1.0 + grow:g} about its centre)"
    report["seconds_per_image"] = round((time.perf_counter() - t0) / max(1, len(images)), 4)
    return report


def score_records(annotations: dict[str, Any], records: Iterable[dict[str, Any]], limit: int | None = None) -> dict[str, Any]:
    """Score saved handos.prediction/1 records (matched to images by `file`) without running a model."""
    by_file = {r.get("file"): r for r in records}
    images = annotations["images"][: limit if limit is not None else None]
    acc = EvalAccumulator()
    models = set()
    for im in images:
        rec = by_file.get(im["file"])
        if rec is None:
            raise InputError(f"no prediction for {im['file']} in the predictions file")
        models.add(str(rec.get("model")))
        acc.add_image([GTHand.from_dict(h) for h in im["hands"]], [PredHand.from_hand(h) for h in rec.get("hands", [])], im["file"])
    return _finish(acc, annotations, ",".join(sorted(models)) or "?")


def _finish(acc: EvalAccumulator, annotations: dict[str, Any], model: str) -> dict[str, Any]:
    """The report with its header fields."""
    return {"dataset": annotations.get("dataset"), "model": model, **acc.report()}


class _NoBar:
    """Stand-in for tqdm when progress is off."""

    def update(self, n: int) -> None:
        """Nothing."""

    def close(self) -> None:
        """Nothing."""


def _progress(total: int, enabled: bool):
    """A tqdm bar on stderr, or a stand-in."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, leave=False)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Records of a JSONL file (e.g. saved predictions); InputError on a bad line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such predictions file")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{n}: not JSON ({err.msg})") from None
    return out
