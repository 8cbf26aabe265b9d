"""Uploaded images: handos' own loader (validation, EXIF), with phone photos over its pixel limit downscaled."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from demo.errors import BadUpload
from handos.errors import InputError
from handos.io.images import MAX_PIXELS, LoadedImage, exif_focal_35mm, load_image

# Photos up to this many pixels are downscaled rather than refused (phones take 50-200 MP); above it, or for a
# file whose header claims more than it holds, the upload is refused as a decompression bomb.
MAX_UPLOAD_PIXELS = 250_000_000
DOWNSCALED_PIXELS = 12_000_000  # what a downscaled photo keeps (about 4000 x 3000)


@dataclass
class Upload:
    """An uploaded image ready for the model, and what was done to it on the way."""

    image: LoadedImage
    original_size: tuple[int, int]  # (W, H) as stored in the file (after EXIF rotation)
    downscaled: bool = False

    def note(self) -> str:
        """A status-line note when the image was downscaled, else ''."""
        if not self.downscaled:
            return ""
        (w, h), im = self.original_size, self.image
        return (f"downscaled from {w}x{h} ({w * h / 1e6:.0f} MP) to {im.width}x{im.height}; "
                f"the model takes up to {MAX_PIXELS // 1_000_000} MP")


def load_upload(path: str) -> Upload:
    """Load an uploaded file; images over handos' pixel limit are downscaled to DOWNSCALED_PIXELS."""
    name = Path(path).name
    size = header_size(path)
    if size is not None and size[0] * size[1] > MAX_UPLOAD_PIXELS:
        raise BadUpload(f"{name}: {size[0]}x{size[1]} is over the demo's {MAX_UPLOAD_PIXELS // 1_000_000} MP limit; "
                        "downscale it first")
    if size is not None and MAX_PIXELS < size[0] * size[1] <= MAX_UPLOAD_PIXELS:
        return downscaled(path, size)
    try:
        loaded = load_image(path)
    except InputError as err:  # name the user's file, not the server's upload path
        raise BadUpload(str(err).replace(str(path), name)) from None
    return Upload(loaded, (loaded.width, loaded.height))


def header_size(path: str) -> tuple[int, int] | None:
    """(W, H) from the file's header without decoding it, or None when PIL cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as im:
                    return tuple(im.size)  # type: ignore[return-value]
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # noqa: BLE001 - handos' loader gives the real message
        return None


def downscaled(path: str, size: tuple[int, int]) -> Upload:
    """Decode a big photo at reduced size (JPEG DCT scaling where possible) down to DOWNSCALED_PIXELS."""
    name = Path(path).name
    w, h = size
    scale = (DOWNSCALED_PIXELS / (w * h)) ** 0.5
    saved = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS
            im = Image.open(path)
            focal = exif_focal_35mm(im)
            exif = im.getexif()
            im.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))  # JPEG: decode at 1/2, 1/4, 1/8
            im.load()
    except Exception as err:  # noqa: BLE001 - any decoder failure is the file's fault
        raise BadUpload(f"{name}: broken or truncated image ({type(err).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    orientation = exif.get(0x0112)
    im = im.convert("RGB")
    if orientation:
        im.getexif()[0x0112] = orientation
        im = ImageOps.exif_transpose(im)
    stored = (w, h) if orientation not in (5, 6, 7, 8) else (h, w)
    target = (max(1, round(stored[0] * scale)), max(1, round(stored[1] * scale)))
    if im.size != target:
        im = im.resize(target, Image.Resampling.LANCZOS if im.size[0] < 2 * target[0] else Image.Resampling.BOX)
    loaded = load_image(im)
    return Upload(LoadedImage(loaded.rgb, path, focal), stored, downscaled=True)


__all__ = ["DOWNSCALED_PIXELS", "MAX_UPLOAD_PIXELS", "Upload", "header_size", "load_upload"]
