"""Image loading, cameras, schema: every bad input gets one clear line; odd formats load right."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from handos.errors import InputError
from handos.io.camera import Camera, default_camera
from handos.io.images import load_image
from handos.io.schema import BONES, JOINT_NAMES, Hand, prediction_record, validate_record


def encode(arr_or_pil, fmt: str, **kw) -> bytes:
    """Encode an image to bytes in `fmt`."""
    pil = arr_or_pil if isinstance(arr_or_pil, Image.Image) else Image.fromarray(arr_or_pil)
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = (np.arange(40 * 30 * 3) % 251).astype(np.uint8).reshape(30, 40, 3)


def bad_inputs(tmp_path):
    """(name, source, expected message fragment) for every kind of bad image input."""
    jpeg = encode(RGB, "JPEG")
    cases = {
        "empty file": (b"", "empty"),
        "truncated jpeg": (jpeg[: len(jpeg) // 3], "truncated"),
        "text with .jpg name": (b"hello, not an image at all\n" * 20, "not an image"),
        "1x1 image": (encode(np.zeros((1, 1, 3), np.uint8), "PNG"), "too small"),
        "bomb 20000x20000": (encode(Image.new("L", (20000, 20000)), "PNG", optimize=False), "limit"),
    }
    out = []
    for name, (data, frag) in cases.items():
        path = tmp_path / (name.replace(" ", "_") + ".jpg")
        path.write_bytes(data)
        out.append((name, str(path), frag))
    out.append(("missing file", str(tmp_path / "nope.jpg"), "no such file"))
    out.append(("a folder", str(tmp_path), "folder"))
    return out


def test_bad_inputs_give_one_line_errors(tmp_path):
    for name, path, fragment in bad_inputs(tmp_path):
        with pytest.raises(InputError) as info:
            load_image(path)
        message = str(info.value)
        assert "\n" not in message, name
        assert fragment in message, (name, message)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "I;16", "1"])
def test_modes_load_as_rgb(mode):
    pil = Image.fromarray(RGB).convert(mode) if mode != "I;16" else Image.fromarray(RGB[..., 0].astype(np.uint16) * 257)
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    img = load_image(encode(pil, fmt))
    assert img.rgb.shape == (30, 40, 3) and img.rgb.dtype == np.uint8


def test_sixteen_bit_keeps_its_range():
    ramp = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (30, 1))
    img = load_image(encode(Image.fromarray(ramp), "PNG"))
    assert img.rgb[:, 0].max() < 5 and img.rgb[:, -1].min() > 250


def test_exif_orientation_is_applied():
    pil = Image.fromarray(RGB)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 CW for display
    img = load_image(encode(pil, "JPEG", exif=exif.tobytes()))
    assert img.rgb.shape == (40, 30, 3)


def test_exif_focal_length_sets_the_camera():
    pil = Image.fromarray(RGB)
    exif = pil.getexif()
    exif.get_ifd(0x8769)[0xA405] = 26
    img = load_image(encode(pil, "JPEG", exif=exif.tobytes()))
    assert img.focal_35mm == 26
    cam = Camera.from_any(None, img.width, img.height, img.focal_35mm)
    assert cam.fx == pytest.approx(26 / 36 * 40)


def test_arrays_of_any_dtype():
    assert load_image(RGB.astype(np.float32) / 255).rgb.max() == 250
    assert load_image(RGB[..., 0]).rgb.shape == (30, 40, 3)
    rgba = np.dstack([RGB, np.full((30, 40), 255, np.uint8)])
    assert np.array_equal(load_image(rgba).rgb, RGB)
    with pytest.raises(InputError):
        load_image(np.full((30, 40, 3), np.nan))
    with pytest.raises(InputError):
        load_image(np.zeros((30, 40, 2)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash(data):
    try:
        img = load_image(data)
    except InputError as err:
        assert "\n" not in str(err)
    else:
        assert img.rgb.ndim == 3 and img.rgb.shape[2] == 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]),
                  shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=40)))
def test_random_arrays_load_or_fail_cleanly(arr):
    try:
        img = load_image(arr)
    except InputError as err:
        assert "\n" not in str(err)
    else:
        assert img.rgb.dtype == np.uint8 and img.rgb.shape[:2] == arr.shape[:2]


def test_default_camera_and_given_camera():
    cam = default_camera(640, 480)
    assert cam.cx == 320 and cam.cy == 240 and 600 < cam.fx < 650
    assert Camera.from_any({"fx": 500}, 640, 480) == Camera(500, 500, 320, 240)
    with pytest.raises(InputError):
        Camera.from_any({"fx": -1}, 640, 480)
    with pytest.raises(InputError):
        Camera.from_any([1, 2], 640, 480)


def test_schema_round_trip():
    rng = np.random.default_rng(0)
    hand = Hand(0, 0.9, "left", 0.8, np.array([1, 2, 30, 40.0]), rng.random((21, 2)) * 40, rng.random(21),
                rng.random((21, 3)), rng.random(3), rng.random((50, 3)))
    rec = prediction_record("a.jpg", 40, 30, default_camera(40, 30).to_dict(), [hand], "test", include_vertices=True)
    validate_record(json.loads(json.dumps(rec)))
    back = Hand.from_dict(rec["hands"][0])
    assert np.allclose(back.joints_3d, hand.joints_3d, atol=1e-5) and back.handedness == "left"
    assert len(JOINT_NAMES) == 21 and len(BONES) == 20 and BONES[4] == (0, 5)
    with pytest.raises(InputError):
        validate_record({"schema": "other"})
