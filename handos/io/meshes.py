"""Mesh files: plain-text Wavefront OBJ."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a triangle mesh as a plain-text Wavefront OBJ (1-based indices)."""
    lines = ["# handos hand model"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces, dtype=np.int64)]
    Path(path).write_text("\n".join(lines) + "\n")
