"""The frozen foundation: MediaPipe's palm detector + hand landmark network in torch, and the
pipeline around them (letterbox, anchors, NMS, ROI, crops, tracking).

Names are imported lazily, so either half works without the other and `import handos.foundation`
stays cheap:
- nets (`handos.foundation.nets`): `load_palm_detector`, `load_landmark_net`, `PalmDetector`,
  `LandmarkNet`, `TFLiteGraph`;
- pipeline: `Foundation`, `FoundationOutput`, `roi_from_landmarks`.
The same two nets also run on LiteRT (`handos.foundation.litert`, the original .tflite graphs on XNNPACK,
CPU inference); `handos.foundation.runtime` chooses between the runtimes (`RUNTIMES`).
"""
from __future__ import annotations

import importlib

# detector effort beyond MediaPipe's own path (FoundationConfig.recall_boost); here so CLIs can list the
# choices without importing torch
RECALL_MODES = ("off", "fast", "full", "search")
# what runs the two nets (handos.foundation.runtime); here for the same reason
RUNTIMES = ("auto", "torch", "litert")
RUNTIME_HELP = ("what runs the palm detector, landmark net and decoder trunk: auto (default: LiteRT/XNNPACK on the "
                "CPU when ai-edge-litert is installed, else torch), torch, or litert (CPU only)")
# the most extra landmark passes FoundationConfig.landmark_passes allows; here for the same reason
MAX_LANDMARK_PASSES = 4

_NETS = ("load_palm_detector", "load_landmark_net", "PalmDetector", "LandmarkNet", "TFLiteGraph", "load_graph")
# public name -> the module that defines it
_HOMES = {
    **dict.fromkeys(_NETS, "handos.foundation.nets"),
    "Foundation": "handos.foundation.pipeline",
    "FoundationOutput": "handos.foundation.types",
    "roi_from_landmarks": "handos.foundation.roi",
}

__all__ = list(_HOMES) + ["RECALL_MODES", "RUNTIMES", "RUNTIME_HELP", "MAX_LANDMARK_PASSES"]


def __getattr__(name: str):
    """Resolve public names on first use (see the module docstring)."""
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'handos.foundation' has no attribute {name!r}")
