"""`python -m handos hand --pose fist --out hand.obj [--png hand.png] [--left] [--view front|side|top]`."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from handos.errors import InputError


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a triangle mesh as a plain-text Wavefront OBJ (1-based indices)."""
    lines = ["# handos hand model"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces, dtype=np.int64)]
    Path(path).write_text("\n".join(lines) + "\n")


def render_view(vertices, faces, view: str = "front", size: int = 512, color=(222, 178, 150),
                background=(40, 44, 52)) -> np.ndarray:
    """Render a root-relative hand mesh from a named view into a size x size RGB uint8 image."""
    import torch

    from handos.render import render_mesh
    from handos.render.views import frame_camera, view_rotation

    pts = torch.as_tensor(np.asarray(vertices), dtype=torch.float32) @ view_rotation(view).T
    pts, K = frame_camera(pts, size, size)
    return render_mesh(None, [(pts, torch.as_tensor(np.asarray(faces)), color)], K, alpha=1.0,
                       height=size, width=size, background=background, cull_backfaces=True)


def main(argv: list[str]) -> int:
    """Export the hand model in a named pose as OBJ and/or PNG."""
    import torch

    from handos.hand import HandModel
    from handos.hand.poses import PRESETS
    from handos.render.views import VIEWS

    ap = argparse.ArgumentParser(prog="handos hand", description="export the handos hand model in a pose")
    ap.add_argument("--pose", default="flat", help=f"pose preset: {', '.join(PRESETS)}, or 'random'")
    ap.add_argument("--out", help="OBJ file to write")
    ap.add_argument("--png", help="PNG render to write")
    ap.add_argument("--left", action="store_true", help="the left hand (mirror image)")
    ap.add_argument("--view", default="front", choices=list(VIEWS), help="view for --png")
    ap.add_argument("--size", type=int, default=512, help="PNG size in pixels")
    ap.add_argument("--seed", type=int, default=0, help="seed for --pose random")
    ap.add_argument("--backend", default="handos", choices=["handos", "mano"], help="mano needs HANDOS_MANO_DIR")
    args = ap.parse_args(argv)
    if not args.out and not args.png:
        raise InputError("nothing to do: give --out hand.obj and/or --png hand.png")
    if not 16 <= args.size <= 8192:
        raise InputError(f"--size must be between 16 and 8192, got {args.size}")
    model = HandModel(backend=args.backend)
    if args.pose == "random":
        pose = model.sample_poses(1, torch.Generator().manual_seed(args.seed))[0]
    else:
        pose = model.pose_preset(args.pose)
    with torch.no_grad():
        out = model(pose[None], None, torch.tensor([args.left]))
    verts = out.vertices[0].numpy()
    faces = model.faces_for(args.left).numpy()
    if args.out:
        write_obj(args.out, verts, faces)
        print(f"wrote {args.out} ({len(verts)} vertices, {len(faces)} faces)")
    if args.png:
        import cv2

        img = render_view(verts, faces, args.view, args.size)
        if not cv2.imwrite(str(args.png), img[..., ::-1]):
            raise InputError(f"could not write {args.png!r} (check the folder exists and the name ends in .png)")
        print(f"wrote {args.png}")
    return 0
