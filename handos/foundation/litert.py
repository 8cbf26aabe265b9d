"""The foundation's two networks on LiteRT (XNNPACK): MediaPipe's original .tflite graphs, for CPU inference.

The same graphs as the torch replay (`handos.foundation.nets`; both files are made by
`python -m handos.foundation.convert`), run by the runtime built for them: on 2 cores XNNPACK takes
~60-65 % of the torch replay's time for the two nets. Same call interface as `PalmDetector` /
`LandmarkNet` (NCHW float tensors in [0, 1] in, torch tensors out), so `Foundation` takes either; they
also take NHWC uint8 crops (`takes_uint8`), scaled into the graph's input buffer without a float copy; the
landmark net's `features` / `feature_map` taps are not graph outputs and are not given here (the decoder
reads neither: it reads the landmarks, depth, presence and world landmarks). Inference only (no
gradients): training and fine-tuning use the torch graphs.

Needs `ai-edge-litert` (pinned in requirements.txt); `litert_available()` says whether it imports.
One interpreter per net, batch 1 (XNNPACK's fast case), invoked once per image/crop under a lock (a
LiteRT interpreter is not thread-safe); threads: `num_threads` of LiteRT's own pool.

>>> palm = load_litert_palm_detector(threads=2)
>>> reg, logits = palm(torch.zeros(2, 3, 192, 192))    # (2, 2016, 18), (2, 2016, 1)
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from handos.errors import ModelError
from handos.weights import WEIGHTS_DIR

__all__ = ["LITERT_REQUIREMENT", "PALM_TFLITE", "LANDMARK_TFLITE", "litert_available", "open_interpreter", "LiteRTGraph",
           "LiteRTPalmDetector", "LiteRTLandmarkNet", "load_litert_palm_detector", "load_litert_landmark_net"]

LITERT_REQUIREMENT = "ai-edge-litert==2.3.0"
PALM_TFLITE = WEIGHTS_DIR / "palm_detection_full.tflite"
LANDMARK_TFLITE = WEIGHTS_DIR / "hand_landmark_full.tflite"
PALM_OUTPUTS = ("regressors", "scores")  # the graphs' outputs, in order (as convert.MODELS)
LANDMARK_OUTPUTS = ("landmarks", "presence", "handedness", "world")


def litert_available() -> bool:
    """Whether the LiteRT interpreter (`ai_edge_litert`) can be imported here."""
    try:
        return importlib.util.find_spec("ai_edge_litert") is not None
    except (ImportError, ValueError):
        return False


class LiteRTGraph:
    """One .tflite graph in a LiteRT interpreter (XNNPACK, `threads` threads): NHWC float batches in, outputs out."""

    def __init__(self, path: Path | str, output_names: tuple[str, ...], threads: int = 1) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path.name} not found at {path}; run python -m handos.foundation.convert --download")
        self.path = path
        self.threads = max(1, int(threads))
        self._interp = open_interpreter(threads=self.threads, model_path=str(path))
        inp = self._interp.get_input_details()[0]
        self.input_shape = tuple(int(s) for s in inp["shape"])  # (1, H, W, 3)
        self._input = inp["index"]
        outs = self._interp.get_output_details()  # the graph's outputs in order
        if len(outs) != len(output_names):
            raise ModelError(f"{path.name} has {len(outs)} outputs, expected {len(output_names)}")
        self._outputs = [(name, d["index"], tuple(int(s) for s in d["shape"][1:]))
                         for name, d in zip(output_names, outs)]
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """x (B, H, W, 3) float32, or uint8 0..255 (scaled by 1/255 as it is written into the graph's input)
        -> {output name: (B, ...) float32}, one invoke per item."""
        b = x.shape[0]
        interp = self._interp
        with self._lock:
            if b == 1:  # the common case: the outputs as the interpreter gives them (get_tensor copies)
                self._write_input(x[0])
                interp.invoke()
                return {name: interp.get_tensor(idx) for name, idx, _ in self._outputs}
            out = {name: np.empty((b,) + shape, dtype=np.float32) for name, _, shape in self._outputs}
            for k in range(b):
                self._write_input(x[k])
                interp.invoke()
                for name, idx, _ in self._outputs:
                    out[name][k] = interp.get_tensor(idx)[0]
        return out

    def _write_input(self, item: np.ndarray) -> None:
        """One (H, W, 3) input straight into the interpreter's input buffer (uint8: divided by 255 on the way,
        the same float32 values as torch's `x.float() / 255`)."""
        view = self._interp.tensor(self._input)()[0]  # (H, W, 3) float32, the graph's own memory
        if item.dtype == np.uint8:
            np.divide(item, np.float32(255), out=view, dtype=np.float32)
        else:
            np.copyto(view, item, casting="same_kind")


def open_interpreter(threads: int, model_path: str | None = None, model_content: bytes | None = None):
    """A LiteRT interpreter on a .tflite file or model bytes, `threads` XNNPACK threads, tensors allocated
    (ModelError when ai-edge-litert is missing)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ModelError(f"the LiteRT runtime needs {LITERT_REQUIREMENT} (pip install {LITERT_REQUIREMENT}), "
                         "or use runtime='torch'") from None
    with _quiet_stderr():  # LiteRT's C++ logger prints an INFO line per interpreter on fd 2
        interp = Interpreter(model_path=model_path, model_content=model_content, num_threads=max(1, int(threads)))
        interp.allocate_tensors()
    return interp


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null for the block (C++ log lines); Python exceptions are unaffected."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _nhwc(x: torch.Tensor | np.ndarray, size: int) -> np.ndarray:
    """Net input as a (B,size,size,3) array: a (B,3,size,size) float tensor in [0,1] as float32 (no copy for
    channels-last CPU memory), or a (B,size,size,3) uint8 array 0..255 as it is (`LiteRTGraph.run` scales it)."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (size, size, 3):
            raise ModelError(f"expected a uint8 array (B, {size}, {size}, 3), got {x.shape} {x.dtype}")
        return x
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size or not x.is_floating_point():
        raise ModelError(f"expected a float tensor (B, 3, {size}, {size}), got {tuple(x.shape)} {x.dtype}")
    y = x.detach().to("cpu", torch.float32).permute(0, 2, 3, 1)
    return np.ascontiguousarray(y.numpy())


class LiteRTPalmDetector:
    """palm_detection_full on LiteRT: as `nets.PalmDetector` ((B,3,192,192) in [0,1] -> regressors, score logits)."""

    input_size = 192
    num_anchors = 2016
    runtime = "litert"
    takes_uint8 = True  # also takes (B,192,192,3) uint8 crops 0..255 (no float copy on the way in)

    def __init__(self, graph: LiteRTGraph) -> None:
        self.graph = graph

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,3,192,192) in [0,1] or (B,192,192,3) uint8 -> (regressors (B,2016,18), score_logits (B,2016,1)),
        float32 CPU tensors."""
        out = self.graph.run(_nhwc(x, self.input_size))
        return torch.from_numpy(out["regressors"]), torch.from_numpy(out["scores"])


class LiteRTLandmarkNet:
    """hand_landmark_full on LiteRT: as `nets.LandmarkNet`, without the `features` / `feature_map` taps."""

    input_size = 224
    runtime = "litert"
    has_features = False
    takes_uint8 = True  # also takes (B,224,224,3) uint8 crops 0..255

    def __init__(self, graph: LiteRTGraph) -> None:
        self.graph = graph

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B,3,224,224) in [0,1] or (B,224,224,3) uint8 -> landmarks (B,21,3), presence (B,), handedness (B,),
        world (B,21,3) (see LandmarkNet)."""
        out = self.graph.run(_nhwc(x, self.input_size))
        b = x.shape[0]
        return {"landmarks": torch.from_numpy(out["landmarks"].reshape(b, 21, 3)),  # (numpy's reshape: no op dispatch)
                "presence": torch.from_numpy(out["presence"].reshape(b)),
                "handedness": torch.from_numpy(out["handedness"].reshape(b)),
                "world": torch.from_numpy(out["world"].reshape(b, 21, 3))}


def load_litert_palm_detector(threads: int = 1, path: Path | str | None = None) -> LiteRTPalmDetector:
    """The palm detector on LiteRT (the shipped .tflite by default) with `threads` XNNPACK threads."""
    return LiteRTPalmDetector(LiteRTGraph(path or PALM_TFLITE, PALM_OUTPUTS, threads))


def load_litert_landmark_net(threads: int = 1, path: Path | str | None = None) -> LiteRTLandmarkNet:
    """The hand landmark net on LiteRT (the shipped .tflite by default) with `threads` XNNPACK threads."""
    return LiteRTLandmarkNet(LiteRTGraph(path or LANDMARK_TFLITE, LANDMARK_OUTPUTS, threads))
