"""Expand what the user gave `predict` (files, folders, globs, JSONL manifests) into work items."""
from __future__ import annotations

import glob
import json
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

    @property
    def is_video(self) -> bool:
        """True for clip files (by extension)."""
        return Path(self.path).suffix.lower() in VIDEO_EXTS


def expand_inputs(inputs: list[str]) -> list[WorkItem]:
    """Files, folders (recursive, sorted), globs and .jsonl manifests -> work items, de-duplicated in order.

    Broken symbolic links in folders and globs are kept, so that the run lists them with the other unreadable files.
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


def read_manifest(path: str) -> list[WorkItem]:
    """A JSONL manifest: one {"file": ..., "camera": {...}|null} per line, paths relative to the manifest."""
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
            full = file if os.path.isabs(file) else str(base / file)
            items.append(WorkItem(full, file, camera))
    if not items:
        raise InputError(f"{path}: manifest is empty")
    return items
