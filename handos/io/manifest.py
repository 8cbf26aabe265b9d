"""Expand what the user gave `predict` (files, folders, globs, JSONL manifests) into work items."""
from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from handos.errors import InputError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".jfif"}
VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts"}
# (the same set as handos.video.reader.VIDEO_SUFFIXES; tests/test_predict_io.py keeps them in step)


@dataclass(frozen=True)
class WorkItem:
    """One input: where to read it, how to name it in the output, and its camera if given."""

    path: str  # readable path
    file: str  # the name written into the output's `file` field (as given; manifest-relative stays relative)
    camera: dict | None = None
    boxes: tuple[tuple[float, float, float, float], ...] | None = None  # hand boxes xyxy px: one hand each

    @property
    def is_video(self) -> bool:
        """True for clip files (by extension)."""
        return Path(self.path).suffix.lower() in VIDEO_EXTS


def expand_inputs(inputs: list[str], boxes: str | None = None) -> list[WorkItem]:
    """Files, folders (recursive, sorted), globs and .jsonl manifests -> work items, de-duplicated in order.

    Broken symbolic links in folders and globs are kept, so that the run lists them with the other unreadable files.
    `boxes`: a JSONL boxes file (a manifest whose every line has "boxes"); its images get exactly those hands,
    also when one of `inputs` names the same file, and its images not among `inputs` are added after them.
    """
    items: list[WorkItem] = []
    for raw in inputs:
        if raw.endswith(".jsonl") and os.path.isfile(raw):
            items += read_manifest(raw)
        elif os.path.isdir(raw):
            found = sorted(
                str(p) for p in Path(raw).rglob("*")
                if (p.is_file() or _broken_link(p)) and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS
            )
            if not found:
                raise InputError(f"{raw}: folder holds no images or clips ({', '.join(sorted(IMAGE_EXTS))})")
            items += [WorkItem(p, p) for p in found]
        elif os.path.isfile(raw):
            items.append(WorkItem(raw, raw))
        elif any(ch in raw for ch in "*?["):
            found = sorted(p for p in glob.glob(raw, recursive=True) if os.path.isfile(p) or _broken_link(Path(p)))
            if not found:
                raise InputError(f"{raw}: pattern matches no files")
            items += [WorkItem(p, p) for p in found]
        else:
            raise InputError(f"{raw}: no such file, folder or manifest")
    if boxes is not None:
        if not os.path.isfile(boxes):
            raise InputError(f"{boxes}: no such boxes file (JSONL: {{\"file\", \"boxes\", \"camera\"}} per line)")
        prompted = read_manifest(boxes, require_boxes=True)
        by_path = {os.path.realpath(it.path): it for it in prompted}
        items = [by_path.pop(os.path.realpath(it.path), it) for it in items]
        items += [it for it in prompted if os.path.realpath(it.path) in by_path]
    seen: set[str] = set()
    unique = []
    for it in items:
        if it.file not in seen:
            seen.add(it.file)
            unique.append(it)
    return unique


def _broken_link(path: Path) -> bool:
    """True for a symbolic link whose target does not exist."""
    return path.is_symlink() and not path.exists()


def _boxes(value, where: str) -> tuple[tuple[float, float, float, float], ...]:
    """A manifest line's "boxes": a list of [x1, y1, x2, y2] px (finite, x2 > x1, y2 > y1), else InputError."""
    if not isinstance(value, list):
        raise InputError(f"{where}: \"boxes\" must be a list of [x1, y1, x2, y2] pixel boxes")
    out = []
    for k, b in enumerate(value):
        ok = isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
        if not ok or not all(math.isfinite(v) for v in b):
            raise InputError(f"{where}: boxes[{k}] must be 4 finite numbers [x1, y1, x2, y2] in pixels, got {json.dumps(b)[:60]}")
        if not (b[2] > b[0] and b[3] > b[1]):
            raise InputError(f"{where}: boxes[{k}] = {b} needs x2 > x1 and y2 > y1")
        out.append(tuple(float(v) for v in b))
    return tuple(out)


def read_manifest(path: str, require_boxes: bool = False) -> list[WorkItem]:
    """A JSONL manifest: one {"file": ..., "camera": {...}|null, "boxes"?: [[x1, y1, x2, y2], ...]} per line.

    Paths are relative to the manifest. A line with "boxes" asks for exactly those hands (no detection);
    with `require_boxes` every line must have them.
    """
    base = Path(path).parent
    items = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                file = entry["file"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{path}:{lineno}: each line must be a JSON object with a \"file\" key") from None
            camera = entry.get("camera")
            if camera is not None and not isinstance(camera, dict):
                raise InputError(f"{path}:{lineno}: \"camera\" must be an object {{fx, fy, cx, cy}} or null")
            boxes = entry.get("boxes")
            if boxes is None and require_boxes:
                raise InputError(f"{path}:{lineno}: each line of a boxes file needs \"boxes\": [[x1, y1, x2, y2], ...]")
            boxes = None if boxes is None else _boxes(boxes, f"{path}:{lineno}")
            if not isinstance(file, str) or not file:
                raise InputError(f"{path}:{lineno}: \"file\" must be a non-empty path")
            full = file if os.path.isabs(file) else str(base / file)
            items.append(WorkItem(full, file, camera, boxes))
    if not items:
        raise InputError(f"{path}: manifest is empty")
    return items
