"""Make docs/output.jpg, the README's picture of handos' output, from the demo's self-made examples.

usage: python tools/readme_picture.py   (writes docs/output.jpg)
"""
from pathlib import Path

import numpy as np
from PIL import Image

import handos
from handos.render.overlay import draw_hands

REPO = Path(__file__).resolve().parents[1]
model = handos.load(device="cpu")
tiles = []
for name in ("two_hands_desk.jpg", "open_palm_wall.jpg"):
    loaded = model.load_images([REPO / "demo" / "examples" / name])[0]
    cam = model.camera_for(loaded)
    hands = model(loaded, camera=cam)
    tile = draw_hands(loaded.rgb, hands, mesh_faces=model.faces_for, K=cam.matrix())
    tiles.append(np.asarray(Image.fromarray(tile).resize((480, round(480 * tile.shape[0] / tile.shape[1])))))
height = min(t.shape[0] for t in tiles)
Image.fromarray(np.concatenate([t[:height] for t in tiles], 1)).save(REPO / "docs" / "output.jpg", quality=85)
print("wrote docs/output.jpg")
