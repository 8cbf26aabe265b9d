"""A fast replay of a converted tflite graph for inference (same maths as `nets.TFLiteGraph`).

`TFLiteGraph.forward` interprets the op list on every call (dict look-ups, dtype casts, per-op Python
branching, out-of-place activations). `FastGraph` compiles the list once into a flat program of bound
steps: parameters cast once, 1x1 convs as GEMMs over the channels-last memory, fused activations run in
place on the tensor the op just made, residual adds in place, activations freed at their last use.
Results equal the plain replay to float rounding (same kernels; see tests/test_foundation_speed.py).

>>> fast = FastGraph(load_palm_detector().graph)   # or nets.compile_graph(graph)
>>> out = fast(x)                                  # same dict as graph(x)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from handos.errors import ModelError

_CL = torch.channels_last
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)


def _act_inplace(name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """An in-place version of a tflite fused activation (None for NONE)."""
    if name == "NONE":
        return None
    if name == "RELU":
        return torch.relu_
    if name == "RELU6":
        return lambda y: y.clamp_(0.0, 6.0)
    if name == "RELU_N1_TO_1":
        return lambda y: y.clamp_(-1.0, 1.0)
    if name == "TANH":
        return torch.tanh_
    raise ModelError(f"unsupported fused activation {name}")


def _cl(y: torch.Tensor) -> torch.Tensor:
    """4D tensors in channels-last memory (a no-op when already so)."""
    if y.dim() == 4 and not y.is_contiguous(memory_format=_CL):
        return y.contiguous(memory_format=_CL)
    return y


class FastGraph(nn.Module):
    """Inference-only compiled replay of a `TFLiteGraph` (same inputs and outputs, no autograd)."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        g = graph.graph
        self.source = [graph]  # not a submodule: keeps its buffers out of this module's state
        names: dict[str, int] = {g["input"]: 0}
        steps: list[tuple[Callable, tuple[int, ...], int, tuple[int, ...]]] = []
        ops = graph._ops
        last_use: dict[str, int] = {}
        for i, op in enumerate(ops):
            for v in op["inputs"]:
                last_use[v] = i
        keep = set(g["outputs"].values()) | set(g.get("taps", {}).values())
        params: dict[str, torch.Tensor] = {}

        def param(key: str) -> torch.Tensor:
            return params.setdefault(key, graph._param(key).detach())

        for i, op in enumerate(ops):
            ins = []
            for n in op["inputs"]:
                if n.startswith("param:"):
                    ins.append(("const", n[6:]))  # a constant input, bound into the step
                else:
                    ins.append(names[n])
            out = names.setdefault(op["output"], len(names))
            free = tuple(names[n] for n in op["inputs"]
                         if not n.startswith("param:") and last_use.get(n) == i and n not in keep)
            fn = self._step(op, param, ins)
            steps.append((fn, tuple(x for x in ins if isinstance(x, int)), out, free))
        self._steps = steps
        self._nslots = len(names)
        self._outputs = {k: names[v] for k, v in g["outputs"].items()}
        self._outputs.update({k: names[v] for k, v in g.get("taps", {}).items()})

    @staticmethod
    def _step(op: dict[str, Any], param: Callable[[str], torch.Tensor], ins: list) -> Callable:
        """A closure running one op on its (non-constant) input tensors."""
        kind = op["op"]
        consts = [param(x[1]) for x in ins if not isinstance(x, int)]
        if consts and kind not in ("add",):
            raise ModelError(f"constant input to {kind} is not supported by the fast replay")
        if kind == "conv":
            pad, stride, dil, groups = op["pad"], tuple(op["stride"]), tuple(op["dilation"]), op["groups"]
            w, b = param(op["weight"]), param(op["bias"])
            act = _act_inplace(op["activation"])
            if op.get("pointwise"):
                w2 = w.flatten(1)

                def conv(a: torch.Tensor) -> torch.Tensor:
                    y = F.linear(a.permute(0, 2, 3, 1), w2, b).permute(0, 3, 1, 2)
                    return act(y) if act else y
            elif pad[0] == pad[1] and pad[2] == pad[3]:
                padding = (pad[0], pad[2])

                def conv(a: torch.Tensor) -> torch.Tensor:
                    y = _cl(F.conv2d(a, w, b, stride, padding, dil, groups))
                    return act(y) if act else y
            elif all(pad[2 * d + 1] - pad[2 * d] in (0, 1) for d in range(2)):
                # TF 'SAME' at stride 2 pads one more after than before: grow the kernel by a zero row/col in
                # front and pad symmetrically (one more before): same windows, no padded copy of the input
                grow = (pad[1] - pad[0], pad[3] - pad[2])
                wz = F.pad(w, (grow[1], 0, grow[0], 0)).contiguous()
                padding = (pad[1], pad[3])

                def conv(a: torch.Tensor) -> torch.Tensor:
                    y = _cl(F.conv2d(a, wz, b, stride, padding, dil, groups))
                    return act(y) if act else y
            else:
                tpad = (pad[2], pad[3], pad[0], pad[1])

                def conv(a: torch.Tensor) -> torch.Tensor:
                    y = _cl(F.conv2d(_cl(F.pad(a, tpad)), w, b, stride, 0, dil, groups))
                    return act(y) if act else y
            return conv
        if kind == "prelu":
            alpha = param(op["alpha"])
            return lambda a: _cl(F.prelu(a, alpha))
        if kind == "add":
            act = _act_inplace(op["activation"])
            if consts:
                c = consts[0]
                return lambda a: act(a + c) if act else a + c

            def add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                y = _cl(torch.add(a, b))
                return act(y) if act else y
            return add
        if kind == "maxpool":
            pad, k, s = op["pad"], op["kernel"], op["stride"]
            act = _act_inplace(op["activation"])
            tpad = (pad[2], pad[3], pad[0], pad[1])
            any_pad = any(pad)

            def pool(a: torch.Tensor) -> torch.Tensor:
                if any_pad:
                    a = F.pad(a, tpad, value=float("-inf"))
                y = _cl(F.max_pool2d(a, k, s))
                return act(y) if act else y
            return pool
        if kind == "pad":
            p = op["paddings"]
            if p[0] != [0, 0]:
                raise ModelError("PAD on the batch axis is not supported")
            tpad = (p[2][0], p[2][1], p[1][0], p[1][1], p[3][0], p[3][1])
            return lambda a: _cl(F.pad(a, tpad))
        if kind == "resize_bilinear":
            if not op["align_corners"] and not op["half_pixel_centers"]:
                raise ModelError("RESIZE_BILINEAR without half_pixel_centers is not supported")
            size, ac = tuple(op["size"]), bool(op["align_corners"])
            return lambda a: _cl(F.interpolate(a, size=size, mode="bilinear", align_corners=ac))
        if kind == "reshape":
            shape = list(op["shape"])

            def reshape(a: torch.Tensor) -> torch.Tensor:
                if a.dim() == 4:
                    a = a.permute(0, 2, 3, 1)
                return _cl(a.reshape([a.shape[0]] + shape[1:]))
            return reshape
        if kind == "concat":
            axis0 = op["axis"]
            act = _act_inplace(op["activation"])

            def concat(*xs: torch.Tensor) -> torch.Tensor:
                axis = _NHWC_TO_NCHW_AXIS[axis0 % 4] if xs[0].dim() == 4 else axis0
                y = _cl(torch.cat(xs, dim=axis))
                return act(y) if act else y
            return concat
        if kind == "mean":
            axes0, keep = op["axes"], op["keep_dims"]

            def mean(a: torch.Tensor) -> torch.Tensor:
                axes = [_NHWC_TO_NCHW_AXIS[ax % 4] for ax in axes0] if a.dim() == 4 else axes0
                return _cl(a.mean(dim=axes, keepdim=keep))
            return mean
        if kind == "fc":
            w = param(op["weight"])
            b = param(op["bias"]) if op["bias"] else None
            act = _act_inplace(op["activation"])

            def fc(a: torch.Tensor) -> torch.Tensor:
                y = F.linear(a.reshape(a.shape[0], -1), w, b)
                return act(y) if act else y
            return fc
        if kind == "logistic":
            return torch.sigmoid
        raise ModelError(f"unsupported graph op {kind}")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, 3, H, W) NCHW -> {output name: tensor, tap name: tensor}, as `TFLiteGraph.forward`."""
        env: list[torch.Tensor | None] = [None] * self._nslots
        env[0] = x.contiguous(memory_format=_CL)
        for fn, ins, out, free in self._steps:
            env[out] = fn(*[env[i] for i in ins])
            for i in free:
                env[i] = None
        return {k: env[i] for k, i in self._outputs.items()}
