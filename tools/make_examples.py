"""Make the demo's example images: our own hand model, rendered by our rasterizer, on procedural backgrounds.

    python tools/make_examples.py [--out demo/examples] [--check]

Nothing here comes from a data set: poses are the hand model's presets, backgrounds are generated.
`--check` runs the foundation detector on each image and reports how many hands it finds.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from handos.io.camera import default_camera

OUT = Path(__file__).resolve().parents[1] / "demo" / "examples"
W, H = 640, 480


@dataclass(frozen=True)
class Placement:
    """One hand in an example: pose preset, side, global rotation (axis-angle), position (m), skin colour."""

    pose: str
    left: bool
    rot: tuple[float, float, float]
    pos: tuple[float, float, float]
    skin: tuple[int, int, int]


# rest pose = palm toward the camera, fingers up (handos.hand.template)
SCENES: dict[str, tuple[str, int, list[Placement]]] = {  # name -> (background, seed, hands)
    "two_hands_desk": ("wood", 1, [Placement("relaxed", False, (0.3, 0.2, 0.25), (-0.1, 0.06, 0.55), (190, 132, 100)),
                                   Placement("three", True, (0.25, -0.2, -0.2), (0.11, 0.06, 0.55), (190, 132, 100))]),
    "open_palm_wall": ("wall", 0, [Placement("spread", False, (0.15, 0.0, 0.1), (0.0, 0.07, 0.5), (226, 178, 148))]),
    "relaxed_tiles": ("tiles", 2, [Placement("relaxed", False, (0.1, 0.35, -0.3), (0.02, 0.08, 0.45), (140, 92, 66))]),
    "ok_bokeh": ("bokeh", 3, [Placement("ok", True, (0.2, -0.3, 0.15), (0.0, 0.07, 0.47), (236, 196, 170))]),
}


def background(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 procedural background: wall, wood, tiles or bokeh."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    if kind == "wall":
        base = np.array([200, 205, 214], np.float32) * (0.8 + 0.25 * (1 - y / H))[..., None]
        base[y > 0.78 * H] *= 0.75  # a skirting board
    elif kind == "wood":
        grain = np.sin(x / 9.0 + 2.5 * np.sin(y / 60.0) + 0.4 * np.sin(x / 3.1)) * 0.5 + 0.5
        base = np.array([150, 104, 64], np.float32) * (0.75 + 0.3 * grain)[..., None]
    elif kind == "tiles":
        tile = ((x // 80 + y // 80) % 2).astype(np.float32)
        grout = ((x % 80 < 3) | (y % 80 < 3)).astype(np.float32)
        base = np.array([90, 120, 150], np.float32) * (0.85 + 0.15 * tile)[..., None]
        base = base * (1 - 0.6 * grout[..., None])
    elif kind == "bokeh":
        base = np.zeros((H, W, 3), np.float32) + np.array([40, 45, 70], np.float32)
        for _ in range(40):
            c = rng.uniform(60, 255, 3)
            cv2.circle(base, (int(rng.uniform(0, W)), int(rng.uniform(0, H))), int(rng.uniform(15, 60)), c.tolist(), -1)
        base = cv2.GaussianBlur(base, (0, 0), 12)
    else:
        raise ValueError(kind)
    base += rng.normal(0, 4, base.shape).astype(np.float32)
    return np.clip(base, 0, 255).astype(np.uint8)


def render_scene(kind: str, hands: list[Placement], seed: int) -> np.ndarray:
    """One example image: the hands posed by the hand model, shaded over the background."""
    from handos.hand import HandModel, axis_angle_to_matrix
    from handos.render import render_mesh

    rng = np.random.default_rng(seed)
    image = background(kind, rng)
    hm = HandModel()
    K = default_camera(W, H).matrix()
    meshes = []
    for p in hands:
        fingers = hm.pose_preset(p.pose)[None]  # (1, 15, 3)
        pose = torch.cat([torch.zeros(1, 1, 3), fingers], dim=1)  # (1, 16, 3), global rotation applied below
        out = hm(pose, None, torch.tensor([p.left]))
        rot = axis_angle_to_matrix(torch.tensor(p.rot, dtype=torch.float32)[None])[0]  # (3, 3)
        verts = out.vertices[0] @ rot.T + torch.tensor(p.pos)  # (V, 3) camera frame
        faces = hm.faces_for(p.left)
        meshes.append((verts.numpy(), faces.numpy(), p.skin))
    image = render_mesh(image, meshes, K, alpha=1.0)
    image = cv2.GaussianBlur(image, (0, 0), 0.7)  # a camera is never perfectly sharp
    noise = rng.normal(0, 2.5, image.shape)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def check(paths: list[Path]) -> dict[str, int]:
    """Hands the foundation detector finds in each image."""
    from handos.foundation import Foundation
    from handos.io.images import load_image

    found = Foundation.load("cpu")
    out = {}
    for p in paths:
        fo = found.detect([load_image(p).rgb], max_hands=4)
        out[p.name] = int(fo.image_index.numel())
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the examples as JPEGs (quality 90)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--check", action="store_true", help="run the foundation on each example")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (kind, seed, hands) in SCENES.items():
        rgb = render_scene(kind, hands, seed=seed)
        path = out / f"{name}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
        print(f"wrote {path} ({len(hands)} hand(s))")
    if args.check:
        for name, n in check(paths).items():
            print(f"{name}: foundation finds {n} hand(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
