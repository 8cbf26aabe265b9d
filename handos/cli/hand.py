"""`python -m handos hand --pose fist --out hand.obj [--png hand.png] [--left] [--view front|side|top]`."""
from __future__ import annotations

import argparse

from handos.errors import InputError
from handos.io.meshes import write_obj


def main(argv: list[str]) -> int:
    """Export the hand model in a named pose as OBJ and/or PNG."""
    import torch

    from handos.hand import HandModel
    from handos.hand.poses import PRESETS
    from handos.render.views import VIEWS, render_view

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
