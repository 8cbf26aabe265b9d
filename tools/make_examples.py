"""Make the demo's example images: our own hand model, rendered by our rasterizer, on procedural backgrounds.

    python tools/make_examples.py [--out demo/examples] [--check] [--scene NAME ...]

Nothing here comes from a data set: poses are the hand model's presets, backgrounds are generated.
So that left and right can be told apart by eye (a bare palm-front right hand and a back-front left hand
look alike), each hand is painted: nails on the back of the fingertips, knuckle creases and three palm lines
on the palm side, and a sleeve at the wrist.
`--check` runs handos on each image and prints the hands it finds (side, handedness score) against the scene's.
`--scene NAME` writes only the named scenes; DOCS_SCENES (not in the demo's gallery) are written only when named.
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
    back: bool = False  # turned about the forearm: the back of the hand (nails) toward the camera


# rest pose = palm toward the camera, fingers up (handos.hand.template); back=True shows the back of the hand
SCENES: dict[str, tuple[str, int, list[Placement]]] = {  # name -> (background, seed, hands)
    "two_hands_desk": ("wood", 1, [Placement("relaxed", False, (0.3, 0.2, 0.25), (-0.1, 0.06, 0.55), (190, 132, 100)),
                                   Placement("three", True, (0.25, -0.2, -0.2), (0.11, 0.06, 0.55), (190, 132, 100), back=True)]),
    "open_palm_wall": ("wall", 0, [Placement("spread", False, (0.15, 0.0, 0.1), (0.0, 0.07, 0.5), (226, 178, 148), back=True)]),
    "relaxed_tiles": ("tiles", 2, [Placement("relaxed", False, (0.1, 0.35, -0.3), (0.02, 0.08, 0.45), (140, 92, 66), back=True)]),
    "ok_bokeh": ("bokeh", 3, [Placement("ok", True, (0.2, -0.3, 0.15), (0.0, 0.07, 0.47), (236, 196, 170), back=True)]),
}

# scenes for the docs' pictures, not in the demo's gallery (name -> as SCENES)
DOCS_SCENES: dict[str, tuple[str, int, list[Placement]]] = {
    # ok_bokeh's hand as a right fist with the palm side toward the camera: MediaPipe's path and the default
    # recall "fast" find nothing, recall "search" finds it (right); the demo's missed-then-found screenshot
    # (tests/test_demo_app.py checks that it behaves so)
    "fist_bokeh_front": ("bokeh", 3, [Placement("fist", False, (0.2, -0.3, 0.15), (0.0, 0.07, 0.47), (236, 196, 170))]),
}
MISSED_BY_DEFAULT = "fist_bokeh_front"


SLEEVES = ((60, 80, 130), (150, 60, 55), (70, 110, 80), (120, 120, 125))  # cloth colours


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


# rest pose (right hand): palm toward -z (the camera), fingers along -y, thumb toward +x; joints in FreiHAND order
FINGER_JOINTS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
# palm lines as polylines in the rest pose's (x, y), metres: heart, head and life line
PALM_LINES = (
    ((-0.046, -0.064), (-0.02, -0.068), (0.0, -0.071), (0.016, -0.078)),
    ((0.03, -0.052), (0.01, -0.05), (-0.015, -0.046), (-0.036, -0.04)),
    ((0.03, -0.054), (0.02, -0.045), (0.014, -0.032), (0.013, -0.018), (0.016, -0.004)),
)
NAIL_RGB = np.array([238, 204, 200], np.float32)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit vertex normals (area-weighted face normals)."""
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    n = np.zeros_like(verts)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def polyline_distance(p: np.ndarray, line) -> np.ndarray:
    """(N,) distance of 2D points to a polyline."""
    best = np.full(len(p), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        a, b = np.asarray(a), np.asarray(b)
        t = np.clip(((p - a) @ (b - a)) / max(float((b - a) @ (b - a)), 1e-12), 0, 1)
        best = np.minimum(best, np.linalg.norm(p - (a + t[:, None] * (b - a)), axis=1))
    return best


def hand_colours(hm, skin: tuple[int, int, int]) -> np.ndarray:
    """(V, 3) per-vertex RGB of the hand: skin with nails, knuckle creases and palm lines (same for both sides:
    the left hand's vertices mirror the right's one to one)."""
    v = hm.rest_vertices.numpy().astype(np.float64)
    j = hm.rest_joints.numpy().astype(np.float64)
    n = vertex_normals(v, hm.faces_for(False).numpy())
    rgb = np.tile(np.asarray(skin, np.float32), (len(v), 1))
    palm_side, back_side = n[:, 2] < -0.25, n[:, 2] > 0.3
    for f, chain in enumerate(FINGER_JOINTS):
        mcp, pip, dip, tip = (j[k] for k in chain)
        d = (tip - dip) / np.linalg.norm(tip - dip)
        t = (v - dip) @ (tip - dip) / float((tip - dip) @ (tip - dip))
        lateral = np.linalg.norm((v - dip) - ((v - dip) @ d)[:, None] * d, axis=1)
        back = n @ (np.array([0.75, 0.0, 0.65]) if f == 0 else np.array([0.0, 0.0, 1.0])) > 0.3
        nail = back & (t > 0.2) & (t < 1.15) & (lateral < 0.013)
        rgb[nail] = NAIL_RGB * np.where(t[nail, None] > 0.9, 1.06, 0.95)
        rgb[back & (t > 0.12) & (t <= 0.2) & (lateral < 0.013)] *= 0.8  # the nail's base (cuticle)
        for joint in (pip, dip) if f else (pip, dip):  # creases across the finger at its two distal joints
            along = np.abs((v - joint) @ ((tip - mcp) / np.linalg.norm(tip - mcp)))
            near = np.linalg.norm(v - joint, axis=1) < 0.016
            rgb[palm_side & near & (along < 0.0022)] *= 0.62
            rgb[back_side & near & (along < 0.003) & ~nail] *= 0.8
    palm = palm_side & (v[:, 1] > -0.09) & (v[:, 1] < 0.0)
    for line in PALM_LINES:
        rgb[palm & (polyline_distance(v[:, :2], line) < 0.0024)] *= 0.6
    return np.clip(rgb, 0, 255)


def sleeve_mesh(radius: tuple[float, float] = (0.043, 0.03), length: float = 0.35, segments: int = 40,
                rings: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A sleeve around the forearm in the rest pose's frame (wrist at the origin, forearm along +y): an elliptic
    tube starting just over the wrist; (vertices (V, 3), faces (F, 3)) wound outward."""
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    y = np.linspace(-0.006, length, rings)
    ring = np.stack([0.01 + radius[0] * np.cos(a), np.zeros_like(a), -0.006 + radius[1] * np.sin(a)], 1)
    verts = np.concatenate([ring + [0, yy, 0] for yy in y])
    faces = []
    for r in range(rings - 1):
        for s in range(segments):
            p, q = r * segments + s, r * segments + (s + 1) % segments
            faces += [[p, q, p + segments], [q, q + segments, p + segments]]
    return verts.astype(np.float32), np.asarray(faces, np.int64)


def sleeve_colours(verts: np.ndarray, cloth: tuple[int, int, int]) -> np.ndarray:
    """(V, 3) RGB: the cloth with a darker cuff band and a light stripe."""
    rgb = np.tile(np.asarray(cloth, np.float32), (len(verts), 1))
    y = verts[:, 1]
    rgb[y < 0.02] *= 0.7  # cuff
    rgb[(y > 0.05) & (y < 0.065)] = rgb[(y > 0.05) & (y < 0.065)] * 0.4 + 150
    return np.clip(rgb, 0, 255)


def render_scene(kind: str, hands: list[Placement], seed: int) -> np.ndarray:
    """One example image: the hands posed by the hand model, shaded over the background."""
    from handos.hand import HandModel, axis_angle_to_matrix
    from handos.render import render_mesh

    rng = np.random.default_rng(seed)
    image = background(kind, rng)
    hm = HandModel()
    K = default_camera(W, H).matrix()
    meshes = []
    sleeve_v, sleeve_f = sleeve_mesh()
    for k, p in enumerate(hands):
        fingers = hm.pose_preset(p.pose)[None]  # (1, 15, 3)
        pose = torch.cat([torch.zeros(1, 1, 3), fingers], dim=1)  # (1, 16, 3), global rotation applied below
        out = hm(pose, None, torch.tensor([p.left]))
        rot = axis_angle_to_matrix(torch.tensor(p.rot, dtype=torch.float32)[None])[0]  # (3, 3)
        if p.back:  # half a turn about the forearm (y) first
            rot = rot @ torch.diag(torch.tensor([-1.0, 1.0, -1.0]))
        verts = out.vertices[0] @ rot.T + torch.tensor(p.pos)  # (V, 3) camera frame
        faces = hm.faces_for(p.left)
        meshes.append((verts.numpy(), faces.numpy(), hand_colours(hm, p.skin)))
        sv, sf = sleeve_v.copy(), sleeve_f
        if p.left:  # mirrored in x, winding flipped
            sv[:, 0] *= -1
            sf = sf[:, ::-1].copy()
        sv = sv @ rot.numpy().T + np.asarray(p.pos, np.float32)
        meshes.append((sv, sf, sleeve_colours(sleeve_v, SLEEVES[k % len(SLEEVES)])))
    image = render_mesh(image, meshes, K, alpha=1.0)
    image = cv2.GaussianBlur(image, (0, 0), 0.7)  # a camera is never perfectly sharp
    noise = rng.normal(0, 2.5, image.shape)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def check(paths: list[Path]) -> dict[str, list[tuple[str, float]]]:
    """(handedness, handedness score) of each hand handos finds in each image, left to right."""
    import handos

    model = handos.load(device="cpu")
    out = {}
    for p in paths:
        hands = sorted(model(p, max_hands=4), key=lambda h: float(h.bbox_xyxy[0]))
        out[p.stem] = [(h.handedness, round(float(h.handedness_score), 2)) for h in hands]
    return out


def write_scene(name: str, out: Path) -> Path:
    """Render one scene of SCENES or DOCS_SCENES to OUT/NAME.jpg (quality 90); returns the path."""
    kind, seed, hands = {**SCENES, **DOCS_SCENES}[name]
    rgb = render_scene(kind, hands, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def main(argv: list[str] | None = None) -> int:
    """Write the examples as JPEGs (quality 90)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--check", action="store_true", help="run the foundation on each example")
    ap.add_argument("--scene", action="append", choices=[*SCENES, *DOCS_SCENES],
                    help="write only this scene (repeatable; default: every scene of the demo's gallery)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    scenes = {**SCENES, **DOCS_SCENES}
    paths = []
    for name in args.scene or SCENES:
        paths.append(write_scene(name, out))
        print(f"wrote {paths[-1]} ({len(scenes[name][2])} hand(s))")
    if args.check:
        for name, found in check(paths).items():
            want = [("left" if p.left else "right") for p in sorted(scenes[name][2], key=lambda p: p.pos[0])]
            ok = [side for side, _ in found] == want
            print(f"{name}: scene {want}, handos finds {found} {'OK' if ok else 'MISMATCH'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
