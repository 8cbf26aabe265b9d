"""Make the docs' screenshots (docs/*.jpg) from the browser tests' tests/artifacts/docs_*.png.

    .venv-ci/bin/python -m pytest -m browser tests/test_demo_app.py tests/test_annotate_browser.py
    .venv-ci/bin/python tools/docs_pictures.py [--artifacts tests/artifacts] [--out docs]

Only tests whose inputs are handos' own renders (demo/examples and the DOCS_SCENES of tools/make_examples.py) save
a docs_*.png: the real evaluation sets (../shared/realdata) have research-only licences, so no committed picture may
show them. Each picture is scaled to its width and saved as the best JPEG quality that stays under 200 KB.
docs/output.jpg is made by tools/readme_picture.py.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PICTURES = {  # screenshot in tests/artifacts -> (picture in docs/, width px)
    "docs_demo_missed_then_found.png": ("demo_missed_then_found.jpg", 1000),  # tests/test_demo_app.py
    "docs_demo_error_stays.png": ("demo_error_stays.jpg", 900),
    "docs_demo_clip.png": ("demo_clip.jpg", 1000),
    "docs_labeling.png": ("labeling.jpg", 1280),  # tests/test_annotate_browser.py
}
MAX_BYTES = 200_000


def jpeg_under(image: Image.Image, max_bytes: int = MAX_BYTES) -> bytes:
    """The image as the highest-quality JPEG (90 down to 50) that fits in max_bytes."""
    for quality in range(90, 49, -5):
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=quality, optimize=True, progressive=True)
        if buf.tell() <= max_bytes:
            return buf.getvalue()
    raise ValueError(f"no JPEG quality >= 50 keeps this {image.size} picture under {max_bytes} bytes")


def main(argv: list[str] | None = None) -> int:
    """Write every docs picture whose screenshot exists; exit 1 when one is missing."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", default=str(REPO / "tests" / "artifacts"))
    ap.add_argument("--out", default=str(REPO / "docs"))
    args = ap.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    missing = 0
    for shot, (name, width) in PICTURES.items():
        src = Path(args.artifacts) / shot
        if not src.is_file():
            print(f"missing {src}: run the browser tests first (see this script's docstring)")
            missing += 1
            continue
        im = Image.open(src).convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        data = jpeg_under(im)
        (Path(args.out) / name).write_bytes(data)
        print(f"wrote {Path(args.out) / name} ({im.width}x{im.height}, {len(data) // 1024} KB) from {shot}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
