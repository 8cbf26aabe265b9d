"""Download files for one result: predictions JSON (schema), meshes as OBJ (camera frame) and GLB (glTF frame)."""
from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from demo.colors import MESH_COLORS
from handos.io.schema import Hand

WORK_ROOT = Path(tempfile.gettempdir()) / "handos-demo"
KEEP_S = 2 * 3600  # result folders older than this are removed when a new one is made

# glTF is y up, z towards the viewer: the camera frame (y down, z forward) turned 180 deg about x.
CAMERA_TO_GLTF = np.diag([1.0, -1.0, -1.0, 1.0])


def new_workdir(prefix: str) -> Path:
    """A fresh folder for one request's files; prunes folders older than KEEP_S."""
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in WORK_ROOT.iterdir():
        try:
            if now - old.stat().st_mtime > KEEP_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=prefix + "-", dir=WORK_ROOT))


LOSSLESS_MAX_PIXELS = 2_000_000  # up to about 1600x1200 the annotated image is a PNG, above a JPEG (fast to send)


def save_annotated(rgb: np.ndarray, stem: Path) -> str:
    """Write the annotated image at full resolution: lossless PNG when small, JPEG (quality 92) when large."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb))
    if rgb.shape[0] * rgb.shape[1] <= LOSSLESS_MAX_PIXELS:
        path = stem.with_suffix(".png")
        im.save(path, "PNG", compress_level=1)
    else:
        path = stem.with_suffix(".jpg")
        im.save(path, "JPEG", quality=92)
    return str(path)


def hand_meshes(hands: Sequence[Hand], faces_for) -> list[tuple[str, trimesh.Trimesh]]:
    """(name, mesh) per hand with vertices, in the camera frame, coloured by handedness."""
    out = []
    for hand in hands:
        if hand.vertices is None:
            continue
        faces = np.asarray(faces_for(hand.handedness), dtype=np.int64)
        mesh = trimesh.Trimesh(np.asarray(hand.vertices, dtype=np.float64), faces, process=False)
        rgba = np.array([*MESH_COLORS.get(hand.handedness, MESH_COLORS["right"]), 255], dtype=np.uint8)
        mesh.visual.face_colors = np.tile(rgba, (len(faces), 1))
        out.append((f"hand{hand.id}_{hand.handedness}", mesh))
    return out


def write_downloads(workdir: Path, stem: str, record: dict[str, Any], hands: Sequence[Hand], faces_for) -> list[str]:
    """Write <stem>.json, and <stem>.obj / <stem>.glb when there are meshes; return the paths."""
    paths = []
    json_path = workdir / f"{stem}.handos.json"
    json_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    paths.append(str(json_path))
    meshes = hand_meshes(hands, faces_for)
    if meshes:
        obj_path = workdir / f"{stem}.hands.obj"
        obj_path.write_text(obj_text(meshes), encoding="utf-8")
        glb_path = workdir / f"{stem}.hands.glb"
        scene = trimesh.Scene()
        for name, mesh in meshes:
            m = mesh.copy()
            m.apply_transform(CAMERA_TO_GLTF)
            scene.add_geometry(m, node_name=name, geom_name=name)
        glb_path.write_bytes(scene.export(file_type="glb"))
        paths += [str(obj_path), str(glb_path)]
    return paths


def obj_text(meshes: list[tuple[str, trimesh.Trimesh]]) -> str:
    """One OBJ with a named object per hand (metres, camera frame: x right, y down, z forward)."""
    buf = io.StringIO()
    buf.write("# handos hands, metres, camera frame (x right, y down, z forward)\n")
    offset = 1
    for name, mesh in meshes:
        buf.write(f"o {name}\ng {name}\n")
        np.savetxt(buf, np.asarray(mesh.vertices), fmt="v %.6f %.6f %.6f")
        np.savetxt(buf, np.asarray(mesh.faces) + offset, fmt="f %d %d %d")
        offset += len(mesh.vertices)
    return buf.getvalue()
