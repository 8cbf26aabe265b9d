"""Image loading and validation: paths, bytes or arrays -> (H, W, 3) uint8 RGB, EXIF honoured."""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from handos.errors import InputError

MAX_PIXELS = 50_000_000  # decompression-bomb limit (about 7000 x 7000)
MIN_SIDE = 16  # nothing smaller can hold a hand the detector can see
MAX_FILE_BYTES = 200 * 1024 * 1024
ORIENTATION_TAG = 0x0112  # EXIF Orientation (1 = upright)

ImageLike = str | os.PathLike | bytes | np.ndarray | Image.Image


@dataclass
class LoadedImage:
    """An RGB image with what was learned while loading it."""

    rgb: np.ndarray  # (H, W, 3) uint8
    name: str | None  # the path as given, if any
    focal_35mm: float | None  # EXIF FocalLengthIn35mmFilm, if present

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.rgb.shape[1])


def load_image(source: ImageLike) -> LoadedImage:
    """Load and validate an image from a path, bytes, a PIL image or an array; raise InputError if unusable."""
    name = None
    if isinstance(source, LoadedImage):
        return source
    if isinstance(source, np.ndarray):
        return LoadedImage(array_to_rgb(source), None, None)
    if isinstance(source, Image.Image):
        return LoadedImage(pil_to_rgb(source, "image"), None, exif_focal_35mm(source))
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        path = Path(name)
        if not path.exists():
            if path.is_symlink():
                raise InputError(f"{name}: broken symbolic link (its target {os.readlink(path)} does not exist)")
            raise InputError(f"{name}: no such file")
        if path.is_dir():
            raise InputError(f"{name}: is a folder, not an image (use `handos predict FOLDER` for folders)")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"{name}: the file is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise InputError(f"{name}: file is {size / 1e6:.0f} MB, over the {MAX_FILE_BYTES / 1e6:.0f} MB limit")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InputError("image data is empty (0 bytes)")
    else:
        raise InputError(f"cannot read an image from a {type(source).__name__}; give a path, bytes or an array")
    label = name or "image"
    pil = open_pil(data, label)
    return LoadedImage(pil_to_rgb(pil, label), name, exif_focal_35mm(pil))


def open_pil(data: bytes, label: str) -> Image.Image:
    """Open and fully decode image bytes with PIL, mapping every failure to one InputError line."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(data))
            w, h = pil.size
            if w * h > MAX_PIXELS:
                raise InputError(f"{label}: {w}x{h} is over the {MAX_PIXELS // 1_000_000} MP limit; downscale it first")
            pil.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{label}: image is over the {MAX_PIXELS // 1_000_000} MP limit; downscale it first") from None
    except UnidentifiedImageError:
        raise InputError(f"{label}: not an image file PIL can read (JPEG, PNG, WebP, BMP, TIFF, GIF ...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InputError(f"{label}: broken or truncated image ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    return pil


def pil_to_rgb(pil: Image.Image, label: str) -> np.ndarray:
    """Apply EXIF orientation and convert any mode (L, LA, P, RGBA, CMYK, I;16, F) to (H, W, 3) uint8 RGB."""
    try:
        if pil.getexif().get(ORIENTATION_TAG, 1) != 1:  # (exif_transpose copies the image even when upright)
            pil = ImageOps.exif_transpose(pil)
    except Exception:  # a broken EXIF block must not lose the picture
        pass
    mode = pil.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(pil).astype(np.float64)
        return array_to_rgb(arr)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in pil.info):
        pil = pil.convert("RGBA")
        background = Image.new("RGBA", pil.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(background, pil)
    rgb = np.asarray(pil if pil.mode == "RGB" else pil.convert("RGB"))
    check_shape(rgb, label)
    return np.ascontiguousarray(rgb)


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Validate an array image (H,W), (H,W,1|3|4), any numeric dtype, and return (H, W, 3) uint8 RGB."""
    if not isinstance(arr, np.ndarray) or arr.ndim not in (2, 3):
        raise InputError(f"image array must be (H, W) or (H, W, C), got shape {getattr(arr, 'shape', None)}")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise InputError(f"image array must have 1, 3 or 4 channels, got {arr.shape[2]}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"image array has unsupported dtype {arr.dtype}")
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        if not np.isfinite(a).all():
            raise InputError("image array contains NaN or infinite values")
        if np.issubdtype(arr.dtype, np.floating) and a.size and a.min() >= 0 and a.max() <= 1.0:
            a = a * 255.0
        elif arr.dtype == np.uint16 or (a.size and a.max() > 255):
            top = 65535.0 if arr.dtype == np.uint16 else max(float(a.max()), 1.0)
            a = a / top * 255.0
        arr = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = np.rint(arr[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    check_shape(arr, "image")
    return np.ascontiguousarray(arr)


def check_shape(rgb: np.ndarray, label: str) -> None:
    """Reject images too small to hold a hand or too large to process."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{label}: {w}x{h} is too small; images need at least {MIN_SIDE} px on each side")
    if h * w > MAX_PIXELS:
        raise InputError(f"{label}: {w}x{h} is over the {MAX_PIXELS // 1_000_000} MP limit; downscale it first")


def exif_focal_35mm(pil: Image.Image) -> float | None:
    """EXIF FocalLengthIn35mmFilm (tag 0xA405) if present and sane, else None."""
    try:
        exif = pil.getexif()
        value = exif.get_ifd(0x8769).get(0xA405) or exif.get(0xA405)
        value = float(value) if value else None
    except Exception:
        return None
    return value if value and 8.0 <= value <= 600.0 else None
