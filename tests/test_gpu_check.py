"""tools/gpu_check.py, the prepared device run: every section runs (here on the CPU) and reports its figures."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_sections_run_on_cpu(realdata, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "tools" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--realdata", str(realdata), "--device", "cpu", "--images", "3", "--train-steps", "2",
                           "--eval-images", "3", "--finetune-steps", "1,1", "--finetune-images", "4", "--skip", "throughput", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for name in ("parity", "pipeline", "latency", "train", "finetune"):
        assert "error" not in res[name], res[name]
    assert res["parity"]["float32"]["landmark_landmarks"] == 0.0  # the same device: identical
    assert res["parity"]["float16"]["landmarks_max_px"] < 1.0
    assert res["pipeline"]["same_hand_count"] == 3 and res["pipeline"]["max_keypoint_diff_px"] == 0.0
    assert res["latency"]["median_ms"] > 0 and res["train"]["steps"] == 2 and res["train"]["recall"] is not None
    assert res["finetune"]["steps_by_stage"] == {"palm": 0, "landmark": 1, "decoder": 1}
    assert res["finetune"]["after"]["pck2d@0.05"] is not None
