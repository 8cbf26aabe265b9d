"""`handos bench`: interleaved latency blocks, and the comparison with MediaPipe's own runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest

from handos.cli import bench as bench_cli
from handos.errors import InputError
from handos.eval import bench


class _Recorder:
    """A stand-in model that logs which image it saw and returns one 'hand'."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def __call__(self, image):
        self.log.append((self.name, int(image.rgb[0, 0, 0])))
        return [object()]


@pytest.fixture
def tiny_images(tmp_path):
    import cv2

    paths = []
    for i in range(7):
        p = tmp_path / f"{i:02d}.png"
        cv2.imwrite(str(p), np.full((16, 16, 3), i, np.uint8))
        paths.append(str(p))
    return paths


def test_latency_runs_models_in_interleaved_blocks(tiny_images):
    log: list = []
    models = {"a": _Recorder("a", log), "b": _Recorder("b", log)}
    res = bench.time_latency(models, tiny_images, mediapipe=False, rounds=2, block=3)
    assert set(res) == {"a", "b"}
    assert res["a"]["images"] == 7 and res["a"]["hands"] == 7 and res["a"]["median_ms"] > 0
    timed = log[10:]  # after 5 warm-up images per model
    names = [n for n, _ in timed]
    assert names[:6] == ["a"] * 3 + ["b"] * 3  # block of 3 for a, then the same 3 for b
    assert [i for n, i in timed if n == "a"] == list(range(7)) * 2
    assert [i for n, i in timed if n == "b"] == list(range(7)) * 2


@pytest.mark.slow
def test_bench_against_mediapipe_on_real_images(realdata, tmp_path):
    if bench.mediapipe_python() is None:
        pytest.skip("MediaPipe reference venv absent (bash .ci/setup_mediapipe_venv.sh)")
    out = tmp_path / "bench.json"
    assert bench_cli.main(["--images", str(realdata / "ge2019_realworld" / "images"), "--limit", "4", "--what", "latency",
                       "--vs", "mediapipe", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["mediapipe_cpu_latency"]["hands"] == 4 and res["handos_cpu_latency"]["hands"] == 4
    assert res["handos_cpu_latency_recall_off"]["hands"] == 4 and res["foundation_cpu_latency"]["hands"] == 4
    for key in ("latency_ratio_handos_over_mediapipe", "latency_ratio_recall_off_over_mediapipe",
                "latency_ratio_foundation_over_mediapipe"):
        assert 0.1 < res[key] < 20
    assert set(res["latency_block_ratios"]) == {"default", "off", "foundation"}
    assert all(0.1 < r < 20 for r in res["latency_block_ratios"].values())


@pytest.mark.slow
def test_bench_runtime_option_and_mediapipe_throughput(realdata, tmp_path):
    """--runtime reaches the models; throughput is set against MediaPipe run in two processes."""
    if bench.mediapipe_python() is None:
        pytest.skip("MediaPipe reference venv absent (bash .ci/setup_mediapipe_venv.sh)")
    out = tmp_path / "bench.json"
    assert bench_cli.main(["--images", str(realdata / "ge2019_realworld" / "images"), "--limit", "4", "--what",
                           "throughput", "--batch-size", "2", "--runtime", "torch", "--vs", "mediapipe",
                           "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["runtime"] == {"palm": "torch", "landmark": "torch"}
    mp, ours = res["mediapipe_throughput_2_processes"], res["cpu_throughput_processes"]
    for side in (mp, ours):  # `handos predict --processes 2` against MediaPipe in two processes, same keys
        assert side["processes"] == 2 and side["images"] == 4 and side["hands"] == 4 and side["images_per_s"] > 0
        assert side["startup_s"] > 0 and 0 < side["images_per_s_with_startup"] < side["images_per_s"]
        assert len(side["rounds_images_per_s"]) == 3
    for key in ("throughput_ratio_handos_over_mediapipe", "throughput_ratio_with_startup_handos_over_mediapipe",
                "throughput_ratio_one_process_over_mediapipe"):
        assert 0.01 < res[key] < 100
    assert res["cpu_throughput_decode_pool"]["images"] == 4


def test_throughput_rounds_give_medians_and_the_spread():
    rounds = [{"images": 50, "images_per_s": r, "startup_s": s, "images_per_s_with_startup": w}
              for r, s, w in ((80.0, 1.0, 20.0), (90.0, 3.0, 10.0), (40.0, 2.0, 30.0))]
    out = bench.median_of_rounds(rounds)
    assert (out["images_per_s"], out["startup_s"], out["images_per_s_with_startup"]) == (80.0, 2.0, 20.0)
    assert out["rounds_images_per_s"] == [80.0, 90.0, 40.0] and out["images"] == 50


def test_bench_inputs_are_explicit(tmp_path, monkeypatch):
    """Missing images or MediaPipe interpreter: a one-line error saying what to pass."""
    monkeypatch.setenv("HANDOS_REALDATA", str(tmp_path / "nowhere"))
    assert bench.default_images() == str(tmp_path / "nowhere" / "ge2019_realworld" / "images")
    with pytest.raises(InputError, match="--images"):
        bench.image_paths(bench.default_images(), 5)
    monkeypatch.setenv("HANDOS_MEDIAPIPE_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(InputError, match="--mediapipe-python"):
        bench.mediapipe_python()
    with pytest.raises(InputError, match="no such Python"):
        bench.mediapipe_python(str(tmp_path))  # a folder is not an interpreter
    assert bench.MEDIAPIPE_WORKER.is_file()
    assert "import handos" not in bench.MEDIAPIPE_WORKER.read_text()
