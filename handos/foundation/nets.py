"""MediaPipe's palm detector and hand landmark network as frozen torch modules.

The shipped safetensors (`handos/weights/*_full.safetensors`, made by
`python -m handos.foundation.convert`) hold the weights and the tflite op list; `TFLiteGraph`
replays that list op by op with torch functions (explicit TF 'SAME' padding, depthwise convs as
grouped convs, 1x1 convs as GEMMs, per-channel PReLU, half-pixel bilinear resize, ...).
Activations are NCHW-shaped with channels-last memory (tflite's NHWC order, oneDNN's fast path);
tflite axes are mapped where it matters (RESHAPE, CONCATENATION, MEAN, PAD). Needs only torch and
safetensors at run time.

Input normalisation (read off the subgraphs serialised in mediapipe 0.10.21's
`_framework_bindings*.so`, `ImageToTensorCalculatorOptions`; older MediaPipe palm models took
[-1, 1], this one does not):
- palm detector: RGB letterboxed to 192x192 (keep_aspect_ratio, BORDER_ZERO: black border),
  float range **[0, 1]** (`output_tensor_float_range { min: 0 max: 1 }`, x = rgb / 255).
- landmark net: RGB rotated ROI crop 224x224 (keep_aspect_ratio), float range **[0, 1]** (x = rgb / 255).

>>> palm = load_palm_detector()                    # PalmDetector, CPU float32, frozen
>>> reg, logits = palm(torch.zeros(2, 3, 192, 192))  # (2, 2016, 18), (2, 2016, 1)
>>> lm = load_landmark_net()
>>> out = lm(torch.zeros(2, 3, 224, 224))           # dict, see LandmarkNet.forward
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from handos.errors import ModelError
from handos.weights import WEIGHTS_DIR

PALM_WEIGHTS = WEIGHTS_DIR / "palm_detection_full.safetensors"
LANDMARK_WEIGHTS = WEIGHTS_DIR / "hand_landmark_full.safetensors"
GRAPH_FORMAT = "handos.tflite-graph/1"

_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)
_MAX_TRACED = 8  # input shapes per graph with a TorchScript trace (see TFLiteGraph.traced)
_CL = torch.channels_last  # tflite axis a of a 4D NHWC tensor is torch axis [a] of NCHW


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """Apply a tflite fused activation."""
    if name == "NONE":
        return x
    if name == "RELU":
        return F.relu(x)
    if name == "RELU6":
        return F.hardtanh(x, 0.0, 6.0)
    if name == "RELU_N1_TO_1":
        return x.clamp(-1.0, 1.0)
    if name == "TANH":
        return torch.tanh(x)
    raise ModelError(f"unsupported fused activation {name}")


class TFLiteGraph(nn.Module):
    """Replays a converted tflite graph (op list + params) with torch ops; NCHW in, dict out."""

    def __init__(self, graph: dict[str, Any], params: dict[str, torch.Tensor]):
        super().__init__()
        if graph.get("format") != GRAPH_FORMAT:
            raise ModelError(f"weights have graph format {graph.get('format')!r}, expected {GRAPH_FORMAT!r}; "
                             "re-run python -m handos.foundation.convert")
        self.graph = graph
        self._names = {k: k.replace(".", "_") for k in params}  # buffer names cannot contain dots
        for k, t in params.items():
            self.register_buffer(self._names[k], t.float().contiguous(), persistent=True)
        self._ops = graph["ops"]
        for op in self._ops:
            if op["op"] == "conv":
                kh, kw = params[op["weight"]].shape[2:]
                op["pointwise"] = (kh, kw) == (1, 1) and op["groups"] == 1 and op["stride"] == [1, 1] and not any(op["pad"])
        # how many times each value is read, to free activations early
        self._last_use: dict[str, int] = {}
        for i, op in enumerate(self._ops):
            for v in op["inputs"]:
                self._last_use[v] = i
        self._keep = set(graph["outputs"].values()) | set(graph.get("taps", {}).values())

    def _param(self, key: str) -> torch.Tensor:
        return getattr(self, self._names[key])

    def _value(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        if name.startswith("param:"):
            return self._param(name[6:])
        return env[name]

    def run_op(self, op: dict[str, Any], ins: list[torch.Tensor]) -> torch.Tensor:
        """Run one graph op on its input tensors (4D ones NCHW-shaped, channels-last memory)."""
        a = ins[0]
        kind = op["op"]
        if kind == "conv":
            pad = op["pad"]
            w = self._param(op["weight"]).to(a.dtype)
            b = self._param(op["bias"]).to(a.dtype)
            if op["pointwise"]:  # 1x1, stride 1, no pad: a GEMM over the NHWC memory (no reorders)
                y = F.linear(a.permute(0, 2, 3, 1), w.flatten(1), b).permute(0, 3, 1, 2)
            elif pad[0] == pad[1] and pad[2] == pad[3]:
                y = F.conv2d(a, w, b, op["stride"], (pad[0], pad[2]), op["dilation"], op["groups"])
            else:
                y = F.conv2d(F.pad(a, (pad[2], pad[3], pad[0], pad[1])).contiguous(memory_format=_CL), w, b,
                             op["stride"], 0, op["dilation"], op["groups"])
            y = _activation(y, op["activation"])
        elif kind == "prelu":
            y = F.prelu(a, self._param(op["alpha"]).to(a.dtype))
        elif kind == "add":
            y = _activation(a + ins[1], op["activation"])
        elif kind == "maxpool":
            pad = op["pad"]
            if any(pad):
                a = F.pad(a, (pad[2], pad[3], pad[0], pad[1]), value=float("-inf"))
            y = _activation(F.max_pool2d(a, op["kernel"], op["stride"]), op["activation"])
        elif kind == "pad":
            p = op["paddings"]  # NHWC [[before, after] x 4]
            if p[0] != [0, 0]:
                raise ModelError("PAD on the batch axis is not supported")
            y = F.pad(a, (p[2][0], p[2][1], p[1][0], p[1][1], p[3][0], p[3][1]))
        elif kind == "resize_bilinear":
            if op["align_corners"] or not op["half_pixel_centers"]:
                if op["align_corners"]:
                    y = F.interpolate(a, size=op["size"], mode="bilinear", align_corners=True)
                else:
                    raise ModelError("RESIZE_BILINEAR without half_pixel_centers is not supported")
            else:
                y = F.interpolate(a, size=op["size"], mode="bilinear", align_corners=False)
        elif kind == "reshape":
            if a.dim() == 4:
                a = a.permute(0, 2, 3, 1)  # back to NHWC element order
            shape = list(op["shape"])
            shape[0] = a.shape[0]
            y = a.reshape(shape)
        elif kind == "concat":
            axis = op["axis"]
            if a.dim() == 4:
                axis = _NHWC_TO_NCHW_AXIS[axis % 4]
            y = _activation(torch.cat(ins, dim=axis), op["activation"])
        elif kind == "mean":
            axes = op["axes"]
            if a.dim() == 4:
                axes = [_NHWC_TO_NCHW_AXIS[ax % 4] for ax in axes]
            y = a.mean(dim=axes, keepdim=op["keep_dims"])
        elif kind == "fc":
            w = self._param(op["weight"]).to(a.dtype)
            b = self._param(op["bias"]).to(a.dtype) if op["bias"] else None
            y = _activation(F.linear(a.reshape(a.shape[0], -1), w, b), op["activation"])
        elif kind == "logistic":
            y = torch.sigmoid(a)
        else:
            raise ModelError(f"unsupported graph op {kind}")
        if y.dim() == 4 and not y.is_contiguous(memory_format=_CL):
            y = y.contiguous(memory_format=_CL)
        return y

    def fast(self) -> nn.Module:
        """The compiled inference replay of this graph (`handos.foundation.fast.FastGraph`), built once.

        Rebuilt when the graph's buffers move (`.to(device, dtype)`); same outputs as `forward`.
        """
        p = next(iter(self._buffers.values()))  # own buffers only (cheaper than buffers() per call)
        key = (p.device, p.dtype, p.data_ptr())
        cache = self.__dict__.get("_fast_cache")
        if cache is None or cache[0] != key:
            from handos.foundation.fast import FastGraph

            cache = (key, FastGraph(self))
            self.__dict__["_fast_cache"] = cache  # not a submodule: no state of its own
        return cache[1]

    def traced(self, x: torch.Tensor) -> Any:
        """The fast replay traced and frozen by TorchScript for inputs shaped like x (CPU), built once per shape.

        Freezing folds the weights in and runs the op list without Python (~10% less CPU time at batch 1);
        tracing takes ~0.5 s per shape, so at most `_MAX_TRACED` shapes are kept (others use the fast replay).
        """
        fast = self.fast()
        cache = self.__dict__.setdefault("_traced_cache", {})
        if cache.get("_fast") is not fast:  # weights moved: drop the old traces
            cache.clear()
            cache["_fast"] = fast
        key = (tuple(x.shape), x.dtype)
        if key not in cache:
            if len(cache) > _MAX_TRACED:
                return fast
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tr = torch.jit.trace(fast, x.contiguous(memory_format=_CL), strict=False, check_trace=False)
                cache[key] = torch.jit.freeze(tr.eval())
        return cache[key]

    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`forward` for inference: the fast replay (traced on CPU) unless $HANDOS_FAST_REPLAY=0 (or grad is on).

        $HANDOS_FAST_REPLAY=1 keeps the fast replay untraced; unset or 'jit' traces on the CPU.
        """
        mode = os.environ.get("HANDOS_FAST_REPLAY", "jit")
        if torch.is_grad_enabled() or mode == "0":
            return self(x)
        if mode == "jit" and x.device.type == "cpu":
            return self.traced(x)(x)
        return self.fast()(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, 3, H, W) NCHW -> {output name: tensor, tap name: tensor} (batched over B)."""
        g = self.graph
        # NCHW shape, channels-last memory: tflite's own NHWC order, and oneDNN's fast path on CPU
        env: dict[str, torch.Tensor] = {g["input"]: x.contiguous(memory_format=_CL)}
        for i, op in enumerate(self._ops):
            env[op["output"]] = self.run_op(op, [self._value(env, n) for n in op["inputs"]])
            for n in op["inputs"]:  # free what is no longer needed
                if self._last_use.get(n) == i and n not in self._keep and n in env:
                    del env[n]
        out = {name: env[v] for name, v in g["outputs"].items()}
        out.update({name: env[v] for name, v in g.get("taps", {}).items()})
        return out


def load_graph(path: Path | str) -> TFLiteGraph:
    """Load a converted safetensors file into a frozen `TFLiteGraph` (float32, CPU)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights not found: {path}; run python -m handos.foundation.convert --download")
    params: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if "handos.graph" not in meta:
            raise ModelError(f"{path.name} has no graph metadata; re-run python -m handos.foundation.convert")
        for k in f.keys():
            params[k] = f.get_tensor(k)
    return TFLiteGraph(json.loads(meta["handos.graph"]), params)


def _freeze(m: nn.Module, device: str | torch.device, dtype: torch.dtype) -> nn.Module:
    """Move to device/dtype, eval mode, requires_grad False everywhere."""
    m = m.to(device=device, dtype=dtype).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


class PalmDetector(nn.Module):
    """MediaPipe palm_detection_full: (B, 3, 192, 192) in [0, 1] -> SSD regressors and score logits."""

    input_size = 192
    num_anchors = 2016

    def __init__(self, graph: TFLiteGraph):
        super().__init__()
        self.graph = graph

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,3,192,192) RGB float in [0,1] (letterboxed, black border) -> (regressors (B,2016,18), score_logits (B,2016,1)).

        regressors per anchor, in 192-px input units relative to the anchor centre: box cx, cy, w, h,
        then 7 keypoints (x, y) (0 wrist, 2 middle-finger MCP, ...). score_logits are raw logits
        (MediaPipe clips them to +-100 and applies a sigmoid).
        """
        _check_input(x, self.input_size)
        out = self.graph.infer(x)
        return out["regressors"], out["scores"]


class LandmarkNet(nn.Module):
    """MediaPipe hand_landmark_full: (B, 3, 224, 224) ROI crops in [0, 1] -> landmarks and features."""

    input_size = 224

    def __init__(self, graph: TFLiteGraph):
        super().__init__()
        self.graph = graph

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B,3,224,224) RGB float in [0,1] -> dict of tensors (all batched over B):

        landmarks (B,21,3): x, y in crop pixels (0..224); z relative depth (wrist ~ 0, smaller =
            nearer the camera) in crop-pixel-like units; MediaPipe's normalised z is
            z / 224 / 0.4 * (ROI width / image width) (TensorsToLandmarks normalize_z 0.4, then
            LandmarkProjection), i.e. in image pixels z_px = z / 224 / 0.4 * roi_w_px;
        presence (B,): hand presence PROBABILITY (the graph already applies the sigmoid;
            MediaPipe keeps the hand when > 0.5, ThresholdingCalculator / min_tracking_confidence);
        handedness (B,): probability (sigmoid in-graph) of MediaPipe's label "Left" (binary
            classification, label map ["Left", "Right"], "Right" = 1 - p); MediaPipe assumes a
            mirrored selfie image, so on an ordinary (un-mirrored) photo p is P(RIGHT hand);
        world (B,21,3): metric 3D landmarks in metres, origin near the hand centre, crop-rotation frame;
        features (B,1152): global average of the last conv map (input of the FC heads);
        feature_map (B,1152,7,7): the last conv feature map (after its ReLU6).
        Precision: float32 matches tflite to ~1e-6 relative; float16 (CUDA or CPU) stays within
        ~0.1 crop px; bfloat16 drifts by ~2 px (not recommended).
        """
        _check_input(x, self.input_size)
        out = self.graph.infer(x)
        b = x.shape[0]
        return {
            "landmarks": out["landmarks"].reshape(b, 21, 3),
            "presence": out["presence"].reshape(b),
            "handedness": out["handedness"].reshape(b),
            "world": out["world"].reshape(b, 21, 3),
            "features": out["features"].reshape(b, -1),
            "feature_map": out["feature_map"].contiguous(),  # plain NCHW memory for consumers
        }


def _check_input(x: torch.Tensor, size: int) -> None:
    """Raise ModelError unless x is (B, 3, size, size) floating point."""
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size or not x.is_floating_point():
        raise ModelError(f"expected a float tensor (B, 3, {size}, {size}), got {tuple(x.shape)} {x.dtype}")


def load_palm_detector(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                       path: Path | str | None = None) -> PalmDetector:
    """The frozen palm detector (shipped weights by default) on device/dtype."""
    return _freeze(PalmDetector(load_graph(path or PALM_WEIGHTS)), device, dtype)


def load_landmark_net(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                      path: Path | str | None = None) -> LandmarkNet:
    """The frozen hand landmark network (shipped weights by default) on device/dtype."""
    return _freeze(LandmarkNet(load_graph(path or LANDMARK_WEIGHTS)), device, dtype)
