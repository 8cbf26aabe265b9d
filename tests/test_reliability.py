"""Every bad input through the CLI: a clear one-line message and a non-zero exit, never a traceback."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from handos.__main__ import main as cli
from handos.io.records import read_records


def png(arr) -> bytes:
    """PNG bytes of an array or PIL image."""
    buf = io.BytesIO()
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def tiff(pil) -> bytes:
    """TIFF bytes of a PIL image."""
    buf = io.BytesIO()
    pil.save(buf, format="TIFF")
    return buf.getvalue()


@pytest.fixture(scope="module")
def gray_hand_jpeg(realdata) -> bytes:
    """A real photo whose hand is still found in grayscale (on ge2019's close-ups neither MediaPipe nor we
    find hands once colour is gone)."""
    return (realdata / "freihand" / "images" / "00115300.jpg").read_bytes()


@pytest.fixture(scope="module")
def hand_jpeg(realdata) -> bytes:
    """A real hand photo (read from ../shared/realdata, never stored in the repo)."""
    return (realdata / "ge2019_realworld" / "images" / "00002.jpg").read_bytes()


def bad_cases(hand_jpeg: bytes) -> dict[str, tuple[str, bytes, str]]:
    """name -> (file name, bytes, fragment the error must contain)."""
    return {
        "0-byte": ("empty.jpg", b"", "empty"),
        "truncated": ("cut.jpg", hand_jpeg[:700], "truncated"),
        "not an image": ("notes.jpg", b"just some text\n" * 50, "not an image"),
        "unsupported format": ("drawing.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image"),
        "1x1": ("dot.png", png(np.zeros((1, 1, 3), np.uint8)), "too small"),
        "20000x20000": ("huge.png", png(Image.new("1", (20000, 20000))), "limit"),
    }


def good_cases(hand_jpeg: bytes, gray_hand_jpeg: bytes) -> dict[str, tuple[str, bytes]]:
    """name -> (file name, bytes) of odd but valid images holding one hand."""
    rgb = np.asarray(Image.open(io.BytesIO(hand_jpeg)).convert("RGB"))
    gray = Image.open(io.BytesIO(gray_hand_jpeg)).convert("L")
    rotated = Image.fromarray(np.rot90(rgb, 1).copy())  # stored rotated, EXIF says how to turn it back
    exif = rotated.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    rotated.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    gray16 = np.asarray(gray).astype(np.uint16) * 257
    return {
        "grayscale": ("gray.png", png(gray)),
        "RGBA": ("rgba.png", png(Image.fromarray(rgb).convert("RGBA"))),
        "16-bit": ("deep.png", png(Image.fromarray(gray16))),
        "CMYK": ("print.tif", tiff(Image.fromarray(rgb).convert("CMYK"))),
        "EXIF-rotated": ("rotated.jpg", buf.getvalue()),
    }


def run_cli(args, capsys):
    """Run the CLI in-process; return (exit code, stderr)."""
    rc = cli(args)
    return rc, capsys.readouterr().err


def test_bad_images_one_line_each(model, hand_jpeg, tmp_path, capsys):
    for name, (fname, data, fragment) in bad_cases(hand_jpeg).items():
        path = tmp_path / fname
        path.write_bytes(data)
        rc, err = run_cli(["predict", str(path), "--out", str(tmp_path / f"{fname}.jsonl"), "--quiet", "--device", "cpu"], capsys)
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("handos predict: error")]
        assert rc == 2 and len(lines) == 1 and fragment in lines[0], (name, err)
        assert "Traceback" not in err


def test_odd_formats_find_the_hand(model, hand_jpeg, gray_hand_jpeg, tmp_path, capsys):
    for name, (fname, data) in good_cases(hand_jpeg, gray_hand_jpeg).items():
        path = tmp_path / fname
        path.write_bytes(data)
        out = tmp_path / f"{fname}.jsonl"
        rc, err = run_cli(["predict", str(path), "--out", str(out), "--quiet", "--device", "cpu"], capsys)
        assert rc == 0, (name, err)
        (rec,) = list(read_records(out))
        assert len(rec["hands"]) == 1, name
        if name == "EXIF-rotated":
            assert (rec["width"], rec["height"]) == (256, 256)
            upright = model(hand_jpeg)[0].keypoints_2d
            assert np.abs(np.asarray(rec["hands"][0]["keypoints_2d"]) - upright).mean() < 3.0


def test_no_hands_and_many_hands(model, hand_jpeg, tmp_path, capsys):
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    hand = np.asarray(Image.open(io.BytesIO(hand_jpeg)).convert("RGB"))
    Image.fromarray(np.concatenate([np.concatenate([hand, hand], 1)] * 2, 0)).save(tmp_path / "four.png")
    out = tmp_path / "p.jsonl"
    rc, err = run_cli(["predict", str(tmp_path / "blank.png"), str(tmp_path / "four.png"), "--out", str(out),
                       "--max-hands", "4", "--quiet", "--device", "cpu"], capsys)
    assert rc == 0, err
    recs = {r["file"].rsplit("/", 1)[-1]: r for r in read_records(out)}
    assert recs["blank.png"]["hands"] == []
    assert len(recs["four.png"]["hands"]) >= 3
    assert "2 images" in err


def test_bad_arguments_and_devices(model, tmp_path, capsys):
    rc, err = run_cli(["predict", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.jsonl")], capsys)
    assert rc == 2 and "no such file" in err
    rc, err = run_cli(["frobnicate"], capsys)
    assert rc == 2 and "unknown verb" in err
    if not __import__("torch").cuda.is_available():
        (tmp_path / "a.png").write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
        rc, err = run_cli(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "y.jsonl"), "--device", "cuda"], capsys)
        assert rc == 2 and "no CUDA" in err


def test_subprocess_prints_no_traceback(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    proc = subprocess.run([sys.executable, "-m", "handos", "predict", str(tmp_path / "bad.jpg"), "--out",
                           str(tmp_path / "o.jsonl"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("handos predict: error: ")


@pytest.mark.slow
def test_weights_errors(tmp_path):
    import handos
    from handos.errors import ModelError

    with pytest.raises(ModelError, match="not found"):
        handos.load(weights=str(tmp_path / "missing.safetensors"))
    (tmp_path / "decoder.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="decoder") as info:
        handos.load(weights=str(tmp_path))
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="Hub"):
        handos.load(weights="nobody-here/no-such-handos-repo")
