"""The frozen foundation: MediaPipe's palm detector + hand landmark network in torch, and the
pipeline around them (letterbox, anchors, NMS, ROI, crops, tracking).

Names are imported lazily, so either half works without the other and `import handos.foundation`
stays cheap:
- nets (`handos.foundation.nets`): `load_palm_detector`, `load_landmark_net`, `PalmDetector`,
  `LandmarkNet`, `TFLiteGraph`;
- pipeline: `Foundation`, `FoundationOutput`, `roi_from_landmarks`.
"""
from __future__ import annotations

import importlib

# detector effort beyond MediaPipe's own path (FoundationConfig.recall_boost); here so CLIs can list the
# choices without importing torch
RECALL_MODES = ("off", "fast", "full", "search")

_NETS = ("load_palm_detector", "load_landmark_net", "PalmDetector", "LandmarkNet", "TFLiteGraph", "load_graph")
_PIPELINE = ("Foundation", "FoundationOutput", "roi_from_landmarks")
# modules that may define the pipeline names, tried in order
_PIPELINE_MODULES = ("handos.foundation.pipeline", "handos.foundation.foundation", "handos.foundation.detect",
                     "handos.foundation.roi")

__all__ = list(_NETS + _PIPELINE) + ["RECALL_MODES"]


def __getattr__(name: str):
    """Resolve public names on first use (see the module docstring)."""
    if name in _NETS:
        return getattr(importlib.import_module("handos.foundation.nets"), name)
    if name in _PIPELINE:
        for mod in _PIPELINE_MODULES:
            try:
                m = importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:
                    raise
                continue
            if hasattr(m, name):
                return getattr(m, name)
    raise AttributeError(f"module 'handos.foundation' has no attribute {name!r}")
