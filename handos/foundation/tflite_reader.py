"""Read a TFLite flatbuffer into plain Python objects (conversion-time only).

Uses the `tflite` schema package (pure Python, on top of `flatbuffers`); never imported at run
time: the shipped safetensors carry everything the torch modules need.

>>> model = read_tflite(open("palm_detection_full.tflite", "rb").read())
>>> [op.name for op in model.ops][:3]
['DEQUANTIZE', 'DEQUANTIZE', 'CONV_2D']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handos.errors import ModelError

# tflite TensorType -> numpy dtype (only the types these graphs use, plus common ones).
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
_PADDING = {0: "SAME", 1: "VALID"}


@dataclass
class Tensor:
    """One tensor of the graph: shape, dtype, and its constant data when it has any."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any
    data: np.ndarray | None  # constant buffer, reshaped to `shape`, or None for activations


@dataclass
class Operator:
    """One builtin operator: its name, input/output tensor indices and decoded options."""

    name: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteModel:
    """The single subgraph of a TFLite model."""

    tensors: list[Tensor]
    ops: list[Operator]
    inputs: list[int]
    outputs: list[int]


def _option_fields(name: str, op: Any, tfl: Any) -> dict[str, Any]:
    """Decode the builtin options of `op` into a dict with normalised values."""
    table = op.BuiltinOptions()
    classes = {
        "CONV_2D": tfl.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tfl.DepthwiseConv2DOptions,
        "ADD": tfl.AddOptions,
        "MAX_POOL_2D": tfl.Pool2DOptions,
        "AVERAGE_POOL_2D": tfl.Pool2DOptions,
        "RESIZE_BILINEAR": tfl.ResizeBilinearOptions,
        "CONCATENATION": tfl.ConcatenationOptions,
        "FULLY_CONNECTED": tfl.FullyConnectedOptions,
        "MEAN": tfl.ReducerOptions,
    }
    if table is None or name not in classes:
        return {}
    o = classes[name]()
    o.Init(table.Bytes, table.Pos)
    d: dict[str, Any] = {}
    if hasattr(o, "FusedActivationFunction"):
        d["activation"] = _ACTIVATIONS[o.FusedActivationFunction()]
    if hasattr(o, "Padding"):
        d["padding"] = _PADDING[o.Padding()]
    if hasattr(o, "StrideH"):
        d["stride"] = [o.StrideH(), o.StrideW()]
    if hasattr(o, "DilationHFactor"):
        d["dilation"] = [o.DilationHFactor(), o.DilationWFactor()]
    if hasattr(o, "DepthMultiplier"):
        d["depth_multiplier"] = o.DepthMultiplier()
    if hasattr(o, "FilterHeight"):
        d["filter"] = [o.FilterHeight(), o.FilterWidth()]
    if hasattr(o, "AlignCorners"):
        d["align_corners"] = bool(o.AlignCorners())
        d["half_pixel_centers"] = bool(o.HalfPixelCenters())
    if name == "CONCATENATION":
        d["axis"] = o.Axis()
    if name == "MEAN":
        d["keep_dims"] = bool(o.KeepDims())
    if name == "FULLY_CONNECTED":
        d["keep_num_dims"] = bool(o.KeepNumDims())
        d["weights_format"] = o.WeightsFormat()
    return d


def read_tflite(buf: bytes) -> TFLiteModel:
    """Parse TFLite flatbuffer bytes (one subgraph, builtin ops only) into a `TFLiteModel`."""
    try:
        import tflite as tfl
    except ImportError as e:  # pragma: no cover - dev dependency
        raise ModelError("converting needs the `tflite` package: pip install tflite==2.18.0") from e
    model = tfl.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise ModelError(f"expected one subgraph, found {model.SubgraphsLength()}; not a MediaPipe hand model")
    opnames = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    g = model.Subgraphs(0)
    tensors: list[Tensor] = []
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        if t.Type() not in _DTYPES:
            raise ModelError(f"tensor {i} has unsupported tflite type {t.Type()}")
        dtype = _DTYPES[t.Type()]
        raw = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() > 0 else 0
        data = None
        if not isinstance(raw, int) and raw.size:
            data = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape).copy()
        tensors.append(Tensor(i, t.Name().decode(), shape, dtype, data))
    ops: list[Operator] = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = opnames[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ops.append(Operator(name, [int(x) for x in op.InputsAsNumpy()], [int(x) for x in op.OutputsAsNumpy()],
                            _option_fields(name, op, tfl)))
    return TFLiteModel(tensors, ops, [int(x) for x in g.InputsAsNumpy()], [int(x) for x in g.OutputsAsNumpy()])
