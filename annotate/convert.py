"""Pure converters: handos records <-> Label Studio tasks, and Label Studio exports -> training/eval files.

Label Studio keeps region geometry in percent of the image (x right, y down, origin top-left) and
the image size in `original_width/height`; handos keeps pixels. Every region this module writes
has a stable id: the box of hand i is `h{i}`, its joint j is `h{i}k{j}` with `parentID = h{i}`.
"""
from __future__ import annotations

import copy
import hashlib
import io
import math
import os
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from handos.errors import HandosError, InputError
from handos.io.schema import BONES, JOINT_NAMES, SCHEMA

LABEL_CONFIG_PATH = Path(__file__).with_name("label_config.xml")
IMAGE_KEY = "image"  # task data field the config's <Image value="$image"> reads
KEY_FIELD = "handos_key"  # stable id of a task's image (content hash): makes pushes idempotent
RECORD_FIELD = "handos"  # the full handos.prediction/1 record, 3D included
FILE_FIELD = "file"  # the image path as given to handos
BOX_TAG, JOINT_TAG, HAND_FLAGS_TAG, HAND_NOTE_TAG, JOINT_FLAGS_TAG = "hand", "joints", "hand_flags", "hand_note", "joint_flags"
HAND_LABELS = {"right": "right hand", "left": "left hand"}
LABEL_TO_HANDEDNESS = {v: k for k, v in HAND_LABELS.items()}
# keypoint marker radius (Label Studio's KeyPoint `width`, percent of the image width): a fraction of the
# hand box's shorter side, clamped in image pixels, so the 21 markers of a small hand stay apart
POINT_RADIUS_OF_BOX = 0.02
POINT_RADIUS_PX = (1.5, 8.0)
COCO_FORMAT = "handos.coco_wholebody_hand/1"


def label_config() -> str:
    """The Label Studio labeling config (XML) for hands: boxes, 21 named joints, per-hand flags."""
    return LABEL_CONFIG_PATH.read_text(encoding="utf-8")


def image_key(data: bytes | np.ndarray) -> str:
    """Stable id of an image: sha1 of its file bytes (or of an array's shape, dtype and pixels), 20 hex chars."""
    h = hashlib.sha1()
    if isinstance(data, np.ndarray):
        arr = np.ascontiguousarray(data)
        h.update(f"{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    else:
        h.update(bytes(data))
    return h.hexdigest()[:20]


def _pct(v: float, size: float) -> float:
    return float(v) / float(size) * 100.0


def point_size_pct(bbox_xyxy: Iterable[float], width: float) -> float:
    """Keypoint marker radius for a hand, in Label Studio's percent-of-image-width units, from its box."""
    x1, y1, x2, y2 = (float(v) for v in bbox_xyxy)
    lo, hi = POINT_RADIUS_PX
    radius_px = min(max(POINT_RADIUS_OF_BOX * min(abs(x2 - x1), abs(y2 - y1)), lo), hi)
    return _pct(radius_px, width)


def record_to_result(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A handos.prediction/1 record -> Label Studio result regions (per hand: its joints, its box, its flags).

    Each hand's joints come before its box (tied to it by parentID): Label Studio stacks later regions on
    top, so this order lets a press on a joint drag the joint, not the box under it.
    """
    W, H = float(record["width"]), float(record["height"])
    base = {"to_name": IMAGE_KEY, "original_width": int(W), "original_height": int(H), "image_rotation": 0}
    out: list[dict[str, Any]] = []
    for i, hand in enumerate(record["hands"]):
        x1, y1, x2, y2 = (float(v) for v in hand["bbox_xyxy"])
        x1, x2 = min(max(x1, 0.0), W), min(max(x2, 0.0), W)  # Label Studio regions live inside the image
        y1, y2 = min(max(y1, 0.0), H), min(max(y2, 0.0), H)
        rid = f"h{i}"
        box = {"x": _pct(x1, W), "y": _pct(y1, H), "width": _pct(x2 - x1, W), "height": _pct(y2 - y1, H), "rotation": 0}
        label = HAND_LABELS.get(hand["handedness"])
        if label is None:
            raise InputError(f"hand {i} of {record.get('file')!r} has handedness {hand['handedness']!r}; expected right or left")
        size = point_size_pct(hand["bbox_xyxy"], W)
        kps = np.asarray(hand["keypoints_2d"], dtype=np.float64).reshape(21, 2)  # (21, 2) px
        kscore = hand.get("keypoints_score") or [float(hand["score"])] * 21
        inside = (kps[:, 0] >= 0) & (kps[:, 0] <= W) & (kps[:, 1] >= 0) & (kps[:, 1] <= H)
        for j in np.flatnonzero(inside):
            out.append({**base, "id": f"{rid}k{j}", "parentID": rid, "from_name": JOINT_TAG, "type": "keypointlabels",
                        "score": float(kscore[j]),
                        "value": {"x": _pct(kps[j, 0], W), "y": _pct(kps[j, 1], H), "width": size,
                                  "keypointlabels": [JOINT_NAMES[j]]}})
        out.append({**base, "id": rid, "from_name": BOX_TAG, "type": "rectanglelabels", "score": float(hand["score"]),
                    "value": {**box, "rectanglelabels": [label]}})
        if not inside.all():  # joints outside the picture: the hand is cut by the border
            out.append({**base, "id": rid, "from_name": HAND_FLAGS_TAG, "type": "choices",
                        "value": {**box, "choices": ["truncated"]}})
    return out


def record_score(record: dict[str, Any]) -> float:
    """One score per image for Label Studio's prediction list: the mean hand score (0 without hands)."""
    scores = [float(h["score"]) for h in record.get("hands", [])]
    return float(np.mean(scores)) if scores else 0.0


def record_to_prediction(record: dict[str, Any], model_version: str | None = None) -> dict[str, Any]:
    """A record -> one Label Studio prediction object {model_version, score, result}."""
    return {"model_version": str(model_version or record.get("model") or "handos"),
            "score": record_score(record), "result": record_to_result(record)}


def record_to_task(record: dict[str, Any], image_url: str, key: str, extra_data: dict | None = None) -> dict[str, Any]:
    """A record -> a Label Studio task: image URL, stable key and the full record in data, plus predictions."""
    if record.get("schema") != SCHEMA:
        raise InputError(f"not a {SCHEMA} record (schema field is {record.get('schema')!r})")
    data = {IMAGE_KEY: image_url, KEY_FIELD: key, FILE_FIELD: record.get("file"), RECORD_FIELD: record}
    data.update(extra_data or {})
    return {"data": data, "predictions": [record_to_prediction(record)]}


# ---------------------------------------------------------------------------------------------
# Label Studio result -> hands


def _region_box_px(value: dict[str, Any], W: float, H: float) -> np.ndarray:
    """A rectangle value (percent, rotation in degrees about its top-left corner) -> axis-aligned xyxy px."""
    x, y = value["x"] * W / 100.0, value["y"] * H / 100.0
    w, h = value["width"] * W / 100.0, value["height"] * H / 100.0
    rot = math.radians(float(value.get("rotation") or 0.0))
    if rot == 0.0:
        return np.array([x, y, x + w, y + h])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)  # (4, 2)
    c, s = math.cos(rot), math.sin(rot)
    pts = corners @ np.array([[c, s], [-s, c]]) + [x, y]
    return np.concatenate([pts.min(0), pts.max(0)])


def _size_of(item: dict[str, Any], fallback: tuple[float, float] | None) -> tuple[float, float]:
    if item.get("original_width") and item.get("original_height"):
        return float(item["original_width"]), float(item["original_height"])
    if fallback is None:
        raise InputError("a Label Studio region lacks original_width/original_height and the task has no handos record")
    return fallback


def result_to_hands(result: list[dict[str, Any]], size: tuple[float, float] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Label Studio result regions -> hands (box, handedness, 21 joints or None, flags), plus grouping stats.

    A joint belongs to the box named by its parentID; otherwise to the smallest box containing it;
    otherwise to the nearest box. Joints with no box at all are dropped and counted.
    """
    stats = {"orphan_joints": 0, "duplicate_joints": 0, "unlabelled_boxes": 0}
    hands: dict[str, dict[str, Any]] = {}
    joints: list[tuple[dict[str, Any], tuple[float, float]]] = []
    per_region: list[dict[str, Any]] = []
    for item in result:
        kind, value = item.get("type"), item.get("value") or {}
        if kind == "rectanglelabels" and item.get("from_name", BOX_TAG) == BOX_TAG:
            W, H = _size_of(item, size)
            labels = value.get("rectanglelabels") or []
            handed = LABEL_TO_HANDEDNESS.get(labels[0]) if labels else None
            if handed is None:
                stats["unlabelled_boxes"] += 1
                continue
            hands[item["id"]] = {"region_id": item["id"], "handedness": handed, "bbox_xyxy": _region_box_px(value, W, H),
                                 "score": item.get("score"), "keypoints_2d": [None] * 21, "joint_occluded": [False] * 21,
                                 "joint_region_ids": [None] * 21, "_parented": [False] * 21,
                                 "flags": [], "note": "", "size": (W, H)}
        elif kind == "keypointlabels" and item.get("from_name", JOINT_TAG) == JOINT_TAG:
            joints.append((item, _size_of(item, size)))
        elif kind in ("choices", "textarea"):
            per_region.append(item)
    joint_flags: dict[str, list[str]] = {}
    for item in per_region:
        value = item.get("value") or {}
        if item.get("from_name") == HAND_FLAGS_TAG and item.get("id") in hands:
            hands[item["id"]]["flags"] = sorted(set(hands[item["id"]]["flags"]) | set(value.get("choices") or []))
        elif item.get("from_name") == HAND_NOTE_TAG and item.get("id") in hands:
            hands[item["id"]]["note"] = "\n".join(value.get("text") or [])
        elif item.get("from_name") == JOINT_FLAGS_TAG:
            joint_flags[item.get("id")] = list(value.get("choices") or [])
    boxes = list(hands.values())
    for item, (W, H) in joints:
        value = item["value"]
        names = value.get("keypointlabels") or []
        if not names or names[0] not in JOINT_NAMES:
            stats["orphan_joints"] += 1
            continue
        j = JOINT_NAMES.index(names[0])
        u, v = value["x"] * W / 100.0, value["y"] * H / 100.0
        parent = hands.get(item.get("parentID") or "")
        if parent is None and boxes:
            b = np.stack([h["bbox_xyxy"] for h in boxes])  # (N, 4)
            inside = (b[:, 0] <= u) & (u <= b[:, 2]) & (b[:, 1] <= v) & (v <= b[:, 3])
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            if inside.any():
                parent = boxes[int(np.argmin(np.where(inside, area, np.inf)))]
            else:
                dx = np.maximum.reduce([b[:, 0] - u, np.zeros(len(b)), u - b[:, 2]])
                dy = np.maximum.reduce([b[:, 1] - v, np.zeros(len(b)), v - b[:, 3]])
                parent = boxes[int(np.argmin(dx * dx + dy * dy))]
        if parent is None:
            stats["orphan_joints"] += 1
            continue
        parented = bool(item.get("parentID")) and item.get("parentID") == parent["region_id"]
        if parent["keypoints_2d"][j] is not None:
            stats["duplicate_joints"] += 1
            if parent["_parented"][j] or not parented:
                continue  # keep the joint tied by parentID over one placed by position
        parent["keypoints_2d"][j] = [u, v]
        parent["_parented"][j] = parented
        parent["joint_region_ids"][j] = item.get("id")
        parent["joint_occluded"][j] = "occluded" in joint_flags.get(item.get("id"), [])
    for h in boxes:
        h.pop("_parented")
        h["bbox_xyxy"] = h["bbox_xyxy"].tolist()
    return boxes, stats


# ---------------------------------------------------------------------------------------------
# Label Studio export -> training / eval files


def task_status(task: dict[str, Any]) -> str:
    """'annotated' (a submitted annotation), 'skipped' (only skipped ones: `was_cancelled`), or 'unlabelled'."""
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    if any(not a.get("was_cancelled") for a in anns):
        return "annotated"
    if anns or int(task.get("cancelled_annotations") or 0) > 0:  # every annotation there is a skip
        return "skipped"
    return "unlabelled"


def pick_result(task: dict[str, Any], use_predictions: bool = False) -> tuple[list[dict[str, Any]] | None, str]:
    """The result to learn from: the latest non-cancelled annotation, else (if asked) the first prediction.

    A task annotators skipped gives (None, 'skipped'), whatever the predictions: it is not a 0-hand image.
    """
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if anns:
        latest = max(anns, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
        return latest.get("result") or [], "annotation"
    if task_status(task) == "skipped":
        return None, "skipped"
    if not use_predictions:
        return None, ""
    preds = [p for p in task.get("predictions") or [] if isinstance(p, dict) and "result" in p]
    if preds:
        return preds[0]["result"] or [], "prediction"
    record = (task.get("data") or {}).get(RECORD_FIELD)
    if isinstance(record, dict) and record.get("schema") == SCHEMA:  # exports list predictions by id only
        return record_to_result(record), "prediction"
    return None, ""


def _task_record(task: dict[str, Any]) -> dict[str, Any] | None:
    data = task.get("data") or {}
    return data.get(RECORD_FIELD) if isinstance(data.get(RECORD_FIELD), dict) else None


def _local_files_rel(url: Any) -> str | None:
    """The `d` of a Label Studio local-files URL when it is a plain relative path, else None."""
    if not isinstance(url, str):
        return None
    parts = urllib.parse.urlsplit(url)
    if not parts.path.rstrip("/").endswith("/data/local-files"):
        return None
    d = urllib.parse.parse_qs(parts.query).get("d", [""])[0]
    if not d or d.startswith(("/", "\\")) or ".." in d.replace("\\", "/").split("/"):
        return None
    return d


def image_location(task: dict[str, Any], root: str | Path | None = None,
                   local_root: str | Path | None = None) -> tuple[str | None, Path | None]:
    """(file_name, local path) of a task's image: the file name relative to `root` when under it, else absolute.

    A task's `data.file` (absolute since pushes record it so) is used as is; a relative one (older pushes) is
    looked for under `root`, then the current folder; a local-files URL is resolved under `local_root` (the
    server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT). (None, None) for images that exist only on Label Studio.
    """
    data = task.get("data") or {}
    file = data.get(FILE_FIELD) or (_task_record(task) or {}).get("file")
    cands: list[Path] = []
    absolute = False
    if isinstance(file, str) and file and "://" not in file and not file.startswith("/data/"):
        f = Path(file).expanduser()
        absolute = f.is_absolute()  # where the push read it: the image's path, found or not on this machine
        cands = [f] if absolute else ([Path(root) / f] if root is not None else []) + [Path.cwd() / f]
    rel = _local_files_rel(data.get(IMAGE_KEY))
    if rel is not None and local_root is not None and not absolute:
        cands.append(Path(local_root) / rel)
    if not cands:
        return None, None
    path = Path(os.path.abspath(next((c for c in cands if c.is_file()), cands[0])))
    if root is not None:
        base = Path(os.path.abspath(root))
        if path == base or base in path.parents:
            return path.relative_to(base).as_posix(), path
    return str(path), path


def image_size(source: str | Path | bytes) -> tuple[int, int] | None:
    """(width, height) of an image as displayed (EXIF rotation applied), from its header; None when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112)
            except Exception:  # a broken EXIF block: the pixel size still stands
                orientation = None
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _result_size(result: Any) -> tuple[float, float] | None:
    for r in result if isinstance(result, list) else []:
        if isinstance(r, dict) and r.get("original_width") and r.get("original_height"):
            return float(r["original_width"]), float(r["original_height"])
    return None


def task_size(task: dict[str, Any], result: list[dict[str, Any]] | None = None, path: Path | None = None,
              fetch: Callable[[str], bytes] | None = None) -> tuple[int, int] | None:
    """A task's image size: from `result`, any annotation, any prediction, the handos record, the local
    file's header, and only then (when a `fetch` is given) the header of the image fetched from its URL."""
    anns = [a.get("result") for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    preds = [p.get("result") for p in task.get("predictions") or [] if isinstance(p, dict)]
    for res in [result, *anns, *preds]:
        size = _result_size(res)
        if size:
            return int(round(size[0])), int(round(size[1]))
    record = _task_record(task) or {}
    if record.get("width") and record.get("height"):
        return int(record["width"]), int(record["height"])
    if path is not None and path.is_file():
        size = image_size(path)
        if size:
            return size
    url = (task.get("data") or {}).get(IMAGE_KEY)
    if fetch is not None and isinstance(url, str) and url:
        try:
            return image_size(fetch(url))
        except HandosError:
            return None
    return None


def _match_prediction(hand: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The predicted hand an annotated hand came from: same region id h{i}, else the best box IoU > 0.3."""
    if not record or not record.get("hands"):
        return None
    rid = hand.get("region_id") or ""
    if rid.startswith("h") and rid[1:].isdigit() and int(rid[1:]) < len(record["hands"]):
        return record["hands"][int(rid[1:])]
    a = np.asarray(hand["bbox_xyxy"], dtype=np.float64)
    best, best_iou = None, 0.3
    for ph in record["hands"]:
        b = np.asarray(ph["bbox_xyxy"], dtype=np.float64)
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
        iou = iw * ih / union if union > 0 else 0.0
        if iou > best_iou:
            best, best_iou = ph, iou
    return best


def _xywh(b: list[float]) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def _coco_kpts(hand: dict[str, Any]) -> tuple[list[float], int]:
    """21 joints -> COCO's flat [x, y, v] * 21 (v: 2 labelled, 1 labelled but occluded, 0 not labelled)."""
    flat: list[float] = []
    n = 0
    for p, occ in zip(hand["keypoints_2d"], hand["joint_occluded"]):
        if p is None:
            flat += [0.0, 0.0, 0]
        else:
            flat += [float(p[0]), float(p[1]), 1 if occ else 2]
            n += 1
    return flat, n


def export_to_coco(tasks: Iterable[dict[str, Any]], use_predictions: bool = False, root: str | Path | None = None,
                   local_root: str | Path | None = None, fetch: Callable[[str], bytes] | None = None) -> dict[str, Any]:
    """A Label Studio JSON export (list of tasks) -> a COCO-WholeBody-hand-style training file.

    One COCO annotation per hand, with the plain COCO keys (`bbox`, `keypoints`, `num_keypoints`),
    COCO-WholeBody's hand keys (`righthand_box`/`_kpts`/`_valid`, `lefthand_*`), the per-hand
    attributes, and the handos prediction it started from (3D included), so nothing is lost.
    Skipped tasks are left out (stats `skipped`), as are tasks nobody labelled (`skipped_unlabelled`)
    unless `use_predictions`. `file_name` is relative to `root` when under it, else absolute (see
    image_location); every image has its size (see task_size; `fetch(url) -> bytes` is the only network
    use, for images with no size anywhere else; images whose size stays unknown are left out: `unsized`).
    """
    images, annotations = [], []
    stats = {"tasks": 0, "images": 0, "hands": 0, "skipped_unlabelled": 0, "skipped": 0, "unsized": 0,
             "no_local_file": 0, "orphan_joints": 0, "duplicate_joints": 0, "unlabelled_boxes": 0}
    for task in tasks:
        stats["tasks"] += 1
        result, source = pick_result(task, use_predictions)
        if result is None:
            stats["skipped" if source == "skipped" else "skipped_unlabelled"] += 1
            continue
        record = _task_record(task)
        file, path = image_location(task, root, local_root)
        size = task_size(task, result, path, fetch)
        if size is None:
            stats["unsized"] += 1
            continue
        W, H = size
        hands, st = result_to_hands(result, (float(W), float(H)))
        for k, v in st.items():
            stats[k] += v
        stats["no_local_file"] += file is None
        image_id = len(images) + 1
        data = task.get("data") or {}
        images.append({"id": image_id, "file_name": file, "width": W, "height": H,
                       "camera": (record or {}).get("camera"), "ls_task_id": task.get("id"),
                       "handos_key": data.get(KEY_FIELD), "image_url": data.get(IMAGE_KEY), "source": source,
                       "handos_prediction": record})
        for hand in hands:
            kpts, n = _coco_kpts(hand)
            box = _xywh(hand["bbox_xyxy"])
            zeros_box, zeros_kpts = [0.0, 0.0, 0.0, 0.0], [0.0] * 63
            is_right = hand["handedness"] == "right"
            pred = _match_prediction(hand, record)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "bbox": box, "area": box[2] * box[3], "keypoints": kpts, "num_keypoints": n,
                "handedness": hand["handedness"],
                "righthand_box": box if is_right else zeros_box, "righthand_kpts": kpts if is_right else zeros_kpts,
                "righthand_valid": is_right,
                "lefthand_box": box if not is_right else zeros_box, "lefthand_kpts": kpts if not is_right else zeros_kpts,
                "lefthand_valid": not is_right,
                "attributes": {"occluded": "occluded" in hand["flags"], "truncated": "truncated" in hand["flags"],
                               "hard": "hard" in hand["flags"], "flags": hand["flags"], "note": hand["note"]},
                "ls_region_id": hand["region_id"],
                "handos_prediction": pred,
            })
        stats["hands"] += len(hands)
    stats["images"] = len(images)
    return {
        "info": {"format": COCO_FORMAT, "description": "hand boxes and 21 keypoints from Label Studio (handos)",
                 "keypoint_order": list(JOINT_NAMES)},
        "categories": [{"id": 1, "name": "hand", "supercategory": "hand", "keypoints": list(JOINT_NAMES),
                        "skeleton": [[a + 1, b + 1] for a, b in BONES]}],
        "images": images, "annotations": annotations, "stats": stats,
    }


def export_to_eval(tasks: Iterable[dict[str, Any]], use_predictions: bool = False, **where: Any) -> dict[str, Any]:
    """A Label Studio JSON export -> handos eval annotations (derived_annotations.json format): images[] with hands[] in pixels.

    `joints_3d` is null: the 3D in the tasks is the model's, not ground truth (it stays in the COCO file).
    `where`: export_to_coco's root, local_root and fetch.
    """
    return coco_to_eval(export_to_coco(tasks, use_predictions, **where))


def coco_to_eval(coco: dict[str, Any]) -> dict[str, Any]:
    """An export_to_coco file -> handos eval annotations (the same images and hands)."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = []
    for img in coco["images"]:
        hands = []
        for ann in by_image.get(img["id"], []):
            k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(21, 3)
            x, y, w, h = ann["bbox"]
            hands.append({"handedness": ann["handedness"], "bbox_xyxy": [x, y, x + w, y + h],
                          "joints_2d": [[float(p[0]), float(p[1])] if p[2] > 0 else None for p in k],
                          "joints_3d": None, "attributes": ann["attributes"]})
        images.append({"file": img["file_name"], "width": img["width"], "height": img["height"],
                       "camera": img["camera"], "hands": hands})
    return {"format": "handos.eval_annotations/1", "source": "label-studio", "images": images}


def task_to_record(task: dict[str, Any], use_predictions: bool = False) -> dict[str, Any] | None:
    """An exported task -> its handos record with the corrected boxes, 2D joints and handedness written in.

    Joints the annotator removed become null; 3D fields stay those of the matched prediction (or null
    for hands the annotator added). None when the task has nothing to learn from.
    """
    result, source = pick_result(task, use_predictions)
    if result is None:
        return None
    record = _task_record(task)
    file, path = image_location(task)
    file = file or (record or {}).get("file") or (task.get("data") or {}).get(IMAGE_KEY)
    W, H = task_size(task, result, path) or (None, None)
    hands, _ = result_to_hands(result, (float(W), float(H)) if W and H else None)
    out = copy.deepcopy(record) if record else {"schema": SCHEMA, "file": file, "width": W, "height": H,
                                                "model": None, "camera": None, "frame": None, "time_s": None}
    new_hands = []
    for i, hand in enumerate(hands):
        pred = _match_prediction(hand, record) or {}
        new_hands.append({
            "id": i, "track_id": pred.get("track_id"), "score": pred.get("score", 1.0),
            "handedness": hand["handedness"], "handedness_score": 1.0,
            "bbox_xyxy": hand["bbox_xyxy"], "keypoints_2d": hand["keypoints_2d"],
            "keypoints_score": [1.0 if p is not None else 0.0 for p in hand["keypoints_2d"]],
            "joints_3d": pred.get("joints_3d"), "joints_3d_frame": "camera", "cam_t": pred.get("cam_t"),
            "vertices": pred.get("vertices"), "labelled_by": source, "attributes": {"flags": hand["flags"], "note": hand["note"]},
        })
    out["hands"] = new_hands
    return out
