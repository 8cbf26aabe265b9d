"""The decoder's network part (`HandOSDecoder.trunk`) as a TFLite graph on LiteRT (XNNPACK), for CPU inference.

On one CPU thread the trunk (6 small attention blocks over 21 + 65 queries) costs more in torch's per-op
dispatch than in arithmetic; XNNPACK runs the same maths as one graph. The graph is written here, when the
decode step is first built, from the decoder's own weights (`trunk_tflite`): any trained or fine-tuned decoder
runs on it, and no file is shipped or converted. Same maths as `HandOSDecoder.trunk` up to float rounding: LayerNorm's affine
and the attention scale (1/sqrt(head dim): 1/4, exact, in the shipped decoder) are folded into the next linear
layer; GELU is TFLite's exact (erf) one.

Only the inference path: training, gradients and CUDA use the torch module. Needs `ai-edge-litert` (its
flatbuffer schema writes the graph).

>>> trunk = LiteRTDecoderTrunk(decoder)
>>> h2, joint3d, vertex, log_s = trunk(evidence, instance, u)   # one hand: (21,7), (1,151), (21,2)

The whole decode step (`pipeline.DecodeStep` with the skinned mesh: decoder, camera refit, skinning) is two
graphs (`step_tflite`) with numpy's SVD for the palm's rigid fit between them (`LiteRTDecodeStep`): no torch
op at all per hand, which on one core is what costs most after the networks (torch's dispatch runs far slower
right after XNNPACK than in a loop). Its geometry restates `HandOSDecoder.encode`/`decode`,
`camera_fit.fit_translation`, `skeleton.chirality` and `skinned_mesh.skin_to_joints` in TFLite operators:
tests/test_litert_decoder.py holds every output to the torch step's, so a change there must be made here too.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

__all__ = ["TFLiteWriter", "fold_norm", "trunk_tflite", "step_tflite", "LiteRTDecoderTrunk", "LiteRTDecodeStep"]


class TFLiteWriter:
    """A TFLite flatbuffer, one operator at a time: float32 tensors, constants, builtin operators."""

    def __init__(self) -> None:
        from ai_edge_litert import schema_py_generated as schema

        self.schema = schema
        self.tensors: list = []
        self.buffers: list = [schema.BufferT()]  # buffer 0: the empty one of every non-constant tensor
        self.operators: list = []
        self.codes: dict[int, int] = {}  # builtin code -> index in the operator code table

    def tensor(self, shape: tuple[int, ...], name: str, data: np.ndarray | None = None, dtype: str = "float32") -> int:
        """A new tensor (constant when `data` is given); returns its index."""
        s = self.schema
        t = s.TensorT()
        t.shape = list(shape)
        t.type = {"float32": s.TensorType.FLOAT32, "int32": s.TensorType.INT32}[dtype]
        t.name = name
        t.buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype=np.dtype(dtype)).tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, value: np.ndarray | torch.Tensor, name: str) -> int:
        """A float32 constant tensor."""
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        arr = arr.astype(np.float32)
        return self.tensor(arr.shape, name, arr)

    def ints(self, values: list[int], name: str) -> int:
        """An int32 constant vector (axes, shapes, permutations)."""
        arr = np.asarray(values, dtype=np.int32)
        return self.tensor(arr.shape, name, arr, dtype="int32")

    def op(self, code: int, inputs: list[int], out_shape: tuple[int, ...], name: str,
           options_type: int = 0, options=None, n_out: int = 1) -> int | list[int]:
        """Append a builtin operator; returns its output tensor (or n_out of them, all of out_shape)."""
        s = self.schema
        if code not in self.codes:
            self.codes[code] = len(self.codes)  # the operator code table is written by `finish`
        outs = [self.tensor(out_shape, f"{name}:{k}" if n_out > 1 else name) for k in range(n_out)]
        o = s.OperatorT()
        o.opcodeIndex = self.codes[code]
        o.inputs = list(inputs)
        o.outputs = outs
        if options is not None:
            o.builtinOptionsType = options_type
            o.builtinOptions = options
        self.operators.append(o)
        return outs if n_out > 1 else outs[0]

    def finish(self, inputs: list[int], outputs: list[int], description: str) -> bytes:
        """The model's bytes (file identifier TFL3), with `inputs` and `outputs` as the graph's."""
        import flatbuffers

        s = self.schema
        g = s.SubGraphT()
        g.tensors, g.inputs, g.outputs, g.operators, g.name = self.tensors, list(inputs), list(outputs), self.operators, "main"
        m = s.ModelT()
        m.version = 3
        m.description = description
        m.subgraphs = [g]
        m.buffers = self.buffers
        codes = [None] * len(self.codes)
        for code, k in self.codes.items():
            oc = s.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = (
                code, min(code, s.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES), 1)
            codes[k] = oc
        m.operatorCodes = codes
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


class _Ops:
    """The handful of layers the trunk needs, on a TFLiteWriter; activations are 2D (tokens, channels)."""

    def __init__(self, w: TFLiteWriter) -> None:
        self.w = w
        self.s = w.schema
        self.n = 0

    def _name(self, what: str) -> str:
        """A fresh tensor name."""
        self.n += 1
        return f"{what}_{self.n}"

    def linear(self, x: int, shape: tuple[int, int], weight: torch.Tensor, bias: torch.Tensor | None) -> int:
        """x (T, i) @ weight.T (o, i) + bias -> (T, o)."""
        s = self.s
        o = s.FullyConnectedOptionsT()
        o.fusedActivationFunction = s.ActivationFunctionType.NONE
        wt = self.w.const(weight, self._name("w"))
        bt = self.w.const(bias if bias is not None else torch.zeros(weight.shape[0]), self._name("b"))
        return self.w.op(s.BuiltinOperator.FULLY_CONNECTED, [x, wt, bt], (shape[0], int(weight.shape[0])),
                         self._name("fc"), s.BuiltinOptions.FullyConnectedOptions, o)

    def binary(self, code: str, a: int, b: int, shape: tuple[int, ...]) -> int:
        """ADD / SUB / MUL / DIV with broadcasting."""
        s = self.s
        opts = {"ADD": (s.AddOptionsT, s.BuiltinOptions.AddOptions), "SUB": (s.SubOptionsT, s.BuiltinOptions.SubOptions),
                "MUL": (s.MulOptionsT, s.BuiltinOptions.MulOptions), "DIV": (s.DivOptionsT, s.BuiltinOptions.DivOptions)}[code]
        o = opts[0]()
        o.fusedActivationFunction = s.ActivationFunctionType.NONE
        return self.w.op(getattr(s.BuiltinOperator, code), [a, b], shape, self._name(code.lower()), opts[1], o)

    def clamp(self, x: int, shape: tuple[int, ...], lo: float | None = None, hi: float | None = None) -> int:
        """min(max(x, lo), hi) against scalar constants."""
        s = self.s
        for code, bound in ((s.BuiltinOperator.MAXIMUM, lo), (s.BuiltinOperator.MINIMUM, hi)):
            if bound is not None:
                x = self.w.op(code, [x, self.scalar(bound)], shape, self._name("clamp"),
                              s.BuiltinOptions.MaximumMinimumOptions, s.MaximumMinimumOptionsT())
        return x

    def unary(self, code: str, x: int, shape: tuple[int, ...]) -> int:
        """An elementwise op without options: EXP, LOG, TANH, LOGISTIC, ABS, NEG, SQRT."""
        return self.w.op(getattr(self.s.BuiltinOperator, code), [x], shape, self._name(code.lower()))

    def scalar(self, value: float) -> int:
        """A (1, 1) float constant (broadcasts against any 2D or 3D tensor)."""
        return self.w.const(np.array([[value]], np.float32), self._name("scalar"))

    def mean(self, x: int, axis: int, shape: tuple[int, ...]) -> int:
        """Mean over one axis, kept."""
        return self._reduce("MEAN", x, axis, shape)

    def sum(self, x: int, axis: int, shape: tuple[int, ...]) -> int:
        """Sum over one axis, kept."""
        return self._reduce("SUM", x, axis, shape)

    def row_dot(self, a: int, b: int, shape: tuple[int, int]) -> int:
        """Row-wise dot products (rows, 1) of a, b (rows, k)."""
        return self.sum(self.binary("MUL", a, b, shape), 1, shape)

    def row_norm(self, x: int, shape: tuple[int, int]) -> int:
        """Row-wise Euclidean lengths (rows, 1) of x (rows, k)."""
        return self.unary("SQRT", self.row_dot(x, x, shape), (shape[0], 1))

    def _reduce(self, code: str, x: int, axis: int, shape: tuple[int, ...]) -> int:
        """MEAN or SUM over one axis, kept."""
        s = self.s
        o = s.ReducerOptionsT()
        o.keepDims = True
        out = tuple(1 if k == axis else d for k, d in enumerate(shape))
        return self.w.op(getattr(s.BuiltinOperator, code), [x, self.w.ints([axis], self._name("axis"))], out,
                         self._name(code.lower()), s.BuiltinOptions.ReducerOptions, o)

    def slice(self, x: int, begin: list[int], size: list[int]) -> int:
        """x[begin : begin + size] on every axis."""
        s = self.s
        return self.w.op(s.BuiltinOperator.SLICE, [x, self.w.ints(begin, self._name("begin")),
                                                   self.w.ints(size, self._name("size"))],
                         tuple(size), self._name("slice"), s.BuiltinOptions.SliceOptions, s.SliceOptionsT())

    def concat(self, xs: list[int], axis: int, shape: tuple[int, ...]) -> int:
        """Join along `axis` -> `shape`."""
        s = self.s
        o = s.ConcatenationOptionsT()
        o.axis = axis
        o.fusedActivationFunction = s.ActivationFunctionType.NONE
        return self.w.op(s.BuiltinOperator.CONCATENATION, xs, shape, self._name("concat"),
                         s.BuiltinOptions.ConcatenationOptions, o)

    def cross(self, a: int, b: int, rows: int) -> int:
        """Row-wise cross products (rows, 3) of a, b (rows, 3): a_yzx * b_zxy - a_zxy * b_yzx."""
        def yzx(x):
            return self.concat([self.slice(x, [0, 1], [rows, 2]), self.slice(x, [0, 0], [rows, 1])], 1, (rows, 3))

        def zxy(x):
            return self.concat([self.slice(x, [0, 2], [rows, 1]), self.slice(x, [0, 0], [rows, 2])], 1, (rows, 3))

        shape = (rows, 3)
        return self.binary("SUB", self.binary("MUL", yzx(a), zxy(b), shape), self.binary("MUL", zxy(a), yzx(b), shape),
                           shape)

    def gelu(self, x: int, shape: tuple[int, ...]) -> int:
        """Exact (erf) GELU."""
        s = self.s
        o = s.GeluOptionsT()
        o.approximate = False
        return self.w.op(s.BuiltinOperator.GELU, [x], shape, self._name("gelu"), s.BuiltinOptions.GeluOptions, o)

    def normalize(self, x: int, shape: tuple[int, int], eps: float) -> int:
        """LayerNorm without its affine (folded into the next linear): (x - mean) / sqrt(var + eps)."""
        s = self.s
        xc = self.binary("SUB", x, self.mean(x, len(shape) - 1, shape), shape)
        var = self.mean(self.binary("MUL", xc, xc, shape), len(shape) - 1, shape)
        var = self.binary("ADD", var, self.w.const(np.array([eps], np.float32), self._name("eps")), shape[:-1] + (1,))
        inv = self.w.op(s.BuiltinOperator.RSQRT, [var], shape[:-1] + (1,), self._name("rsqrt"))
        return self.binary("MUL", xc, inv, shape)

    def norm_linear(self, x: int, shape: tuple[int, int], norm: torch.nn.LayerNorm, weight: torch.Tensor,
                    bias: torch.Tensor | None) -> int:
        """linear(norm(x)) with the norm's affine folded into the linear layer."""
        w, b = fold_norm(norm, weight, bias)
        return self.linear(self.normalize(x, shape, norm.eps), shape, w, b)

    def reshape(self, x: int, shape: tuple[int, ...]) -> int:
        """Reshape to `shape`."""
        s = self.s
        o = s.ReshapeOptionsT()
        o.newShape = list(shape)
        return self.w.op(s.BuiltinOperator.RESHAPE, [x, self.w.ints(list(shape), self._name("shape"))], shape,
                         self._name("reshape"), s.BuiltinOptions.ReshapeOptions, o)

    def transpose(self, x: int, perm: list[int], shape: tuple[int, ...]) -> int:
        """Permute axes: `shape` is the input's."""
        s = self.s
        out = tuple(shape[p] for p in perm)
        return self.w.op(s.BuiltinOperator.TRANSPOSE, [x, self.w.ints(perm, self._name("perm"))], out,
                         self._name("transpose"), s.BuiltinOptions.TransposeOptions, s.TransposeOptionsT())

    def split0(self, x: int, parts: int, shape: tuple[int, ...]) -> list[int]:
        """Split along axis 0 into `parts` equal pieces."""
        s = self.s
        o = s.SplitOptionsT()
        o.numSplits = parts
        axis = self.w.tensor((), self._name("axis"), np.array(0, np.int32), dtype="int32")
        return self.w.op(s.BuiltinOperator.SPLIT, [axis, x], (shape[0] // parts,) + shape[1:], self._name("split"),
                         s.BuiltinOptions.SplitOptions, o, n_out=parts)

    def matmul(self, a: int, b: int, out: tuple[int, ...], adj_y: bool = False) -> int:
        """Batched a @ b (b transposed with adj_y)."""
        s = self.s
        o = s.BatchMatMulOptionsT()
        o.adjX, o.adjY = False, adj_y
        return self.w.op(s.BuiltinOperator.BATCH_MATMUL, [a, b], out, self._name("bmm"),
                         s.BuiltinOptions.BatchMatMulOptions, o)

    def softmax(self, x: int, shape: tuple[int, ...]) -> int:
        """Softmax over the last axis."""
        s = self.s
        o = s.SoftmaxOptionsT()
        o.beta = 1.0
        return self.w.op(s.BuiltinOperator.SOFTMAX, [x], shape, self._name("softmax"), s.BuiltinOptions.SoftmaxOptions, o)

    def mlp(self, x: int, shape: tuple[int, int], seq: torch.nn.Sequential) -> int:
        """Linear, GELU, linear (`decoder.mlp`)."""
        h = self.linear(x, shape, seq[0].weight, seq[0].bias)
        h = self.gelu(h, (shape[0], int(seq[0].weight.shape[0])))
        return self.linear(h, (shape[0], int(seq[0].weight.shape[0])), seq[2].weight, seq[2].bias)

    def block(self, x: int, tokens: int, layer: torch.nn.TransformerEncoderLayer, bias: torch.Tensor | None) -> int:
        """`decoder.pre_norm_block` on (tokens, d) (inference: no dropout)."""
        attn = layer.self_attn
        d, heads = int(attn.embed_dim), int(attn.num_heads)
        hd = d // heads
        shape = (tokens, d)
        w_in, b_in = attn.in_proj_weight.detach().clone(), attn.in_proj_bias.detach().clone()
        w_in[:d] *= hd ** -0.5  # SDPA's scale on q (1/sqrt(head_dim); 1/4 here: exact)
        b_in[:d] *= hd ** -0.5
        qkv = self.norm_linear(x, shape, layer.norm1, w_in, b_in)  # (T, 3d): q | k | v, heads side by side
        qkv = self.transpose(self.reshape(qkv, (tokens, 3 * heads, hd)), [1, 0, 2], (tokens, 3 * heads, hd))
        q, k, v = self.split0(qkv, 3, (3 * heads, tokens, hd))  # (h, T, hd) each
        scores = self.matmul(q, k, (heads, tokens, tokens), adj_y=True)
        if bias is not None:
            scores = self.binary("ADD", scores, self.w.const(bias, self._name("mask")), (heads, tokens, tokens))
        a = self.matmul(self.softmax(scores, (heads, tokens, tokens)), v, (heads, tokens, hd))
        a = self.reshape(self.transpose(a, [1, 0, 2], (heads, tokens, hd)), shape)
        x = self.binary("ADD", x, self.linear(a, shape, attn.out_proj.weight, attn.out_proj.bias), shape)
        hidden = int(layer.linear1.weight.shape[0])
        h = self.gelu(self.norm_linear(x, shape, layer.norm2, layer.linear1.weight, layer.linear1.bias), (tokens, hidden))
        return self.binary("ADD", x, self.linear(h, (tokens, hidden), layer.linear2.weight, layer.linear2.bias), shape)


def fold_norm(norm: torch.nn.LayerNorm, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') with linear(norm(x), W, b) == linear(normalize(x), W', b'): W' = W * gamma, b' = b + W @ beta."""
    w = weight.detach().double()
    b = bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    gamma = norm.weight.detach().double() if norm.weight is not None else torch.ones(w.shape[1], dtype=torch.float64)
    beta = norm.bias.detach().double() if norm.bias is not None else torch.zeros(w.shape[1], dtype=torch.float64)
    return (w * gamma).float(), (b + w @ beta).float()


def trunk_tflite(decoder: torch.nn.Module) -> bytes:
    """The trunk of `decoder` (a HandOSDecoder) for one hand as a .tflite model.

    inputs: evidence (21, E), instance (1, I), u (21, 2) (see `HandOSDecoder.encode`);
    outputs: head_2d (21, 3), head_joint3d (21, 3), head_vertex (V', 3), head_camera (1, 1), raw (unscaled).
    """
    from handos.hand.skeleton import NUM_JOINTS

    w = TFLiteWriter()
    ops = _Ops(w)
    n_ev = int(decoder.evidence[0].weight.shape[1])
    n_inst = int(decoder.instance[0].weight.shape[1])
    ev_in = w.tensor((NUM_JOINTS, n_ev), "evidence")
    inst_in = w.tensor((1, n_inst), "instance")
    u_in = w.tensor((NUM_JOINTS, 2), "u")
    return w.finish([ev_in, inst_in, u_in], list(_trunk(ops, decoder, ev_in, inst_in, u_in)), "handos decoder trunk")


def _trunk(ops: _Ops, decoder: torch.nn.Module, ev_in: int, inst_in: int, u_in: int) -> tuple[int, int, int, int]:
    """`HandOSDecoder.trunk` on one hand's tensors of `ops`' graph -> (head_2d, head_joint3d, head_vertex, head_camera)."""
    from handos.hand.skeleton import NUM_JOINTS

    w = ops.w
    nj, nc = NUM_JOINTS, int(decoder.num_coarse)
    d = int(decoder.config.d_model)
    n_ev = int(decoder.evidence[0].weight.shape[1])
    n_inst = int(decoder.instance[0].weight.shape[1])
    with torch.no_grad():
        x = ops.mlp(ev_in, (nj, n_ev), decoder.evidence)
        inst = ops.mlp(inst_in, (1, n_inst), decoder.instance)
        x = ops.binary("ADD", x, w.const(decoder.joint_embed, "joint_embed"), (nj, d))
        x = ops.binary("ADD", x, inst, (nj, d))
        for layer in decoder.layers_2d:
            x = ops.block(x, nj, layer, None)
        h2 = ops.norm_linear(x, (nj, d), decoder.norm_2d, decoder.head_2d.weight, decoder.head_2d.bias)  # (21,3)
        u_ref = ops.binary("ADD", u_in, ops.slice(h2, [0, 0], [nj, 2]), (nj, 2))
        x = ops.binary("ADD", x, ops.linear(u_ref, (nj, 2), decoder.refined_embed.weight, decoder.refined_embed.bias),
                       (nj, d))
        lifted = ops.linear(ops.transpose(x, [1, 0], (nj, d)), (d, nj), decoder.lifting, None)  # (d, V'+1)
        lifted = ops.binary("ADD", ops.transpose(lifted, [1, 0], (d, nc + 1)), w.const(decoder.query_prior(), "prior"),
                            (nc + 1, d))
        tokens = nj + nc + 1
        t = ops.concat([x, lifted], 0, (tokens, d))
        for layer in decoder.layers_3d:
            t = ops.block(t, tokens, layer, decoder.attn_bias)
        tn = ops.normalize(t, (tokens, d), decoder.norm_3d.eps)
        heads = []
        for head, start, rows in ((decoder.head_joint3d, 0, nj), (decoder.head_vertex, nj, nc),
                                  (decoder.head_camera, nj + nc, 1)):
            wt, bt = fold_norm(decoder.norm_3d, head.weight, head.bias)
            heads.append(ops.linear(ops.slice(tn, [start, 0], [rows, d]), (rows, d), wt, bt))
    return h2, heads[0], heads[1], heads[2]


def step_tflite(decoder: torch.nn.Module, rest_joints: torch.Tensor, skin_basis: torch.Tensor,
                fit_camera: bool) -> tuple[bytes, bytes]:
    """The whole decode step of `pipeline.DecodeStep` (skinned mesh) for one hand as two .tflite models, split
    where the palm's rigid fit needs an SVD (done on the host between them: `LiteRTDecodeStep`).

    A: joints_2d (21,2), joints_z (21,1), joint_conf (21,1), camera (1,4), world (21,3), roi (1,5), cos_sin (1,2)
       -> keypoints (21,2), keypoint scores (21,1), joints (21,3) camera frame, cam_t (1,3), chirality (1,1),
       handedness score (1,1), root-relative joints (21,3), palm cross-covariance (3,3) and palm centre (1,3)
       before mirroring (`skinned_mesh.kabsch`: a left hand's is the right hand's times the mirror, column-wise).
    B: the SVD's U, Vt (3,3), root-relative joints (21,3), mirror (1,3), palm centre (1,3), cam_t (1,3)
       -> vertices (V,3) in the camera frame (`skinned_mesh.skin_to_joints`, plus cam_t).
    """
    return _graph_a(decoder, rest_joints, fit_camera), _graph_b(rest_joints, skin_basis)


def _graph_a(decoder: torch.nn.Module, rest_joints: torch.Tensor, fit_camera: bool) -> bytes:
    """Graph A of `step_tflite`: HandOSDecoder.encode, trunk and decode, the camera refit, the palm fit's inputs."""
    from handos.hand.skeleton import NUM_JOINTS
    from handos.model.decoder import WORLD_UNIT_M
    from handos.model.skinned_mesh import PALM

    cfg = decoder.config
    nj, nc = NUM_JOINTS, int(decoder.num_coarse)
    w = TFLiteWriter()
    o = _Ops(w)
    j2d, jz, conf = w.tensor((nj, 2), "joints_2d"), w.tensor((nj, 1), "joints_z"), w.tensor((nj, 1), "joint_conf")
    cam, world, roi, cs = w.tensor((1, 4), "camera"), w.tensor((nj, 3), "world"), w.tensor((1, 5), "roi"), w.tensor((1, 2), "cos_sin")
    # the ROI frame (HandOSDecoder.encode): r2 = [[c, -s], [s, c]], rows as vectors times r2 go into the frame
    centre, size = o.slice(roi, [0, 0], [1, 2]), o.slice(roi, [0, 2], [1, 1])
    f2, pp = o.slice(cam, [0, 0], [1, 2]), o.slice(cam, [0, 2], [1, 2])
    focal = o.mean(f2, 1, (1, 2))
    c, s_ = o.slice(cs, [0, 0], [1, 1]), o.slice(cs, [0, 1], [1, 1])
    ns = o.unary("NEG", s_, (1, 1))
    r2 = o.reshape(o.concat([c, ns, s_, c], 1, (1, 4)), (2, 2))
    r2t = o.reshape(o.concat([c, s_, ns, c], 1, (1, 4)), (2, 2))
    u = o.binary("DIV", o.matmul(o.binary("SUB", j2d, centre, (nj, 2)), r2, (nj, 2)), size, (nj, 2))
    z = o.binary("DIV", o.binary("SUB", jz, o.slice(jz, [0, 0], [1, 1]), (nj, 1)), size, (nj, 1))
    ray = o.matmul(o.binary("DIV", o.binary("SUB", centre, pp, (1, 2)), f2, (1, 2)), r2, (1, 2))
    log_size = o.binary("ADD", o.unary("LOG", o.binary("DIV", size, focal, (1, 1)), (1, 1)), o.scalar(2.5), (1, 1))
    ev = [u, z, conf]
    inst = [log_size, ray, o.mean(conf, 0, (nj, 1)), o.reshape(u, (1, 2 * nj)), o.reshape(z, (1, nj)), o.reshape(conf, (1, nj))]
    if cfg.use_world:
        wr = o.binary("SUB", world, o.slice(world, [0, 0], [1, 3]), (nj, 3))
        wr = o.concat([o.matmul(o.slice(wr, [0, 0], [nj, 2]), r2, (nj, 2)), o.slice(wr, [0, 2], [nj, 1])], 1, (nj, 3))
        wr = o.binary("DIV", wr, o.scalar(WORLD_UNIT_M), (nj, 3))
        ev.append(wr)
        inst.append(o.reshape(wr, (1, 3 * nj)))
    n_ev, n_inst = int(decoder.evidence[0].weight.shape[1]), int(decoder.instance[0].weight.shape[1])
    h2, hj, hv, hc = _trunk(o, decoder, o.concat(ev, 1, (nj, n_ev)), o.concat(inst, 1, (1, n_inst)), u)
    # HandOSDecoder.decode: joints, the mesh's joints (for handedness), camera
    u_ref = o.binary("ADD", u, o.slice(h2, [0, 0], [nj, 2]), (nj, 2))
    unit = o.scalar(WORLD_UNIT_M)
    ja = o.binary("MUL", hj, unit, (nj, 3))
    ja = o.binary("SUB", ja, o.slice(ja, [0, 0], [1, 3]), (nj, 3))
    with torch.no_grad():
        coarse_map = decoder.joint_map @ decoder.joint_regressor @ decoder.upsample  # (21,V') as decode's
        blend = decoder.coarse_blend
    coarse = o.binary("ADD", o.matmul(w.const(blend, "coarse_blend"), ja, (nc, 3)), o.binary("MUL", hv, unit, (nc, 3)),
                      (nc, 3))
    mesh_joints = o.matmul(w.const(coarse_map, "mesh_joints"), coarse, (nj, 3))

    def to_camera(x: int) -> int:  # rows @ rot^T: x, y through r2^T, z as it is
        return o.concat([o.matmul(o.slice(x, [0, 0], [nj, 2]), r2t, (nj, 2)), o.slice(x, [0, 2], [nj, 1])], 1, (nj, 3))

    mesh_joints = to_camera(o.binary("SUB", mesh_joints, o.slice(mesh_joints, [0, 0], [1, 3]), (nj, 3)))
    joints = to_camera(ja) if cfg.joints_3d == "direct" else mesh_joints
    tz = o.binary("MUL", o.binary("MUL", focal, o.scalar(cfg.depth_prior_m), (1, 1)),
                  o.unary("EXP", o.clamp(hc, (1, 1), -3.0, 3.0), (1, 1)), (1, 1))
    tz = o.binary("DIV", tz, size, (1, 1))
    j2d_ref = o.binary("ADD", o.matmul(o.binary("MUL", u_ref, size, (nj, 2)), r2t, (nj, 2)), centre, (nj, 2))
    txy = o.binary("MUL", o.binary("DIV", o.binary("SUB", o.slice(j2d_ref, [0, 0], [1, 2]), pp, (1, 2)), f2, (1, 2)), tz, (1, 2))
    cam_t = o.concat([txy, tz], 1, (1, 3))
    # chirality(mesh joints, soft): det[j9 - j0, j5 - j17, j2 - j0] over the three lengths
    def row(k: int) -> int:
        return o.slice(mesh_joints, [k, 0], [1, 3])

    a_, b_, c_ = (o.binary("SUB", row(p), row(q), (1, 3)) for p, q in ((9, 0), (5, 17), (2, 0)))
    det = o.row_dot(a_, o.cross(b_, c_, 1), (1, 3))
    lengths = o.binary("MUL", o.binary("MUL", o.row_norm(a_, (1, 3)), o.row_norm(b_, (1, 3)), (1, 1)),
                       o.row_norm(c_, (1, 3)), (1, 1))
    chi = o.binary("DIV", det, o.clamp(lengths, (1, 1), lo=1e-12), (1, 1))
    hscore = o.binary("ADD", o.scalar(0.5), o.binary("MUL", o.scalar(0.5), o.unary(
        "TANH", o.binary("MUL", o.scalar(cfg.chirality_gain), o.unary("ABS", chi, (1, 1)), (1, 1)), (1, 1)), (1, 1)), (1, 1))
    kp_score = o.unary("LOGISTIC", o.binary("ADD", o.slice(h2, [0, 2], [nj, 1]), o.scalar(2.0), (nj, 1)), (nj, 1))
    kp = j2d_ref if cfg.refine_2d else j2d
    if fit_camera:  # camera_fit.fit_translation(fit_depth=False)
        wgt = o.binary("ADD", o.clamp(kp_score, (nj, 1), lo=0.0), o.scalar(1e-9), (nj, 1))
        tz_ = o.slice(cam_t, [0, 2], [1, 1])
        depth = o.binary("ADD", o.slice(joints, [0, 2], [nj, 1]), tz_, (nj, 1))
        per_joint = o.binary("SUB", o.binary("DIV", o.binary("MUL", o.binary("SUB", kp, pp, (nj, 2)), depth, (nj, 2)), f2, (nj, 2)),
                             o.slice(joints, [0, 0], [nj, 2]), (nj, 2))
        txy = o.binary("DIV", o.sum(o.binary("MUL", wgt, per_joint, (nj, 2)), 0, (nj, 2)), o.sum(wgt, 0, (nj, 1)), (1, 2))
        cam_t = o.concat([txy, tz_], 1, (1, 3))
    # the palm's rigid fit (skinned_mesh.kabsch) before mirroring: cross-covariance and centre of the palm joints
    pick = np.zeros((len(PALM), nj), np.float32)
    pick[np.arange(len(PALM)), list(PALM)] = 1.0
    palm = o.matmul(w.const(pick, "palm_rows"), joints, (len(PALM), 3))
    centre_palm = o.mean(palm, 0, (len(PALM), 3))
    src = rest_joints[list(PALM)].float()
    src_c = (src - src.mean(0, keepdim=True)).T  # (3,5)
    cov = o.matmul(w.const(src_c, "palm_rest"), o.binary("SUB", palm, centre_palm, (len(PALM), 3)), (3, 3))
    out_joints = o.binary("ADD", joints, cam_t, (nj, 3))
    return w.finish([j2d, jz, conf, cam, world, roi, cs],
                    [kp, kp_score, out_joints, cam_t, chi, hscore, joints, cov, centre_palm], "handos decode step, graph A")


def _graph_b(rest_joints: torch.Tensor, skin_basis: torch.Tensor) -> bytes:
    """Graph B of `step_tflite`: the palm rotation from the SVD, the segments' rotations, the skinned vertices."""
    from handos.geometry import SKEW_MAP
    from handos.hand.skeleton import NUM_JOINTS
    from handos.model.skinned_mesh import BONE_VECTORS, PALM, bone_directions

    nj = NUM_JOINTS
    nb = len(BONE_VECTORS)
    k, nv = int(skin_basis.shape[0]), int(skin_basis.shape[1])
    w = TFLiteWriter()
    o = _Ops(w)
    u_in, vt_in = w.tensor((3, 3), "u"), w.tensor((3, 3), "vt")
    joints, mirror = w.tensor((nj, 3), "joints"), w.tensor((1, 3), "mirror")
    centre0, cam_t = w.tensor((1, 3), "palm_centre"), w.tensor((1, 3), "cam_t")
    target = o.binary("MUL", joints, mirror, (nj, 3))  # left hands into right-hand space
    mu_d = o.binary("MUL", centre0, mirror, (1, 3))
    v, ut = o.transpose(vt_in, [1, 0], (3, 3)), o.transpose(u_in, [1, 0], (3, 3))
    m = o.matmul(v, ut, (3, 3))  # kabsch: no reflection, flip the last axis where det(V U^T) < 0
    r = [o.slice(m, [i, 0], [1, 3]) for i in range(3)]
    det = o.row_dot(r[0], o.cross(r[1], r[2], 1), (1, 3))
    sign = o.binary("DIV", det, o.unary("ABS", det, (1, 1)), (1, 1))
    flip = o.concat([w.const(np.ones((1, 2), np.float32), "ones"), sign], 1, (1, 3))
    rot = o.matmul(o.binary("MUL", v, flip, (3, 3)), ut, (3, 3))  # r0
    r0t = o.transpose(rot, [1, 0], (3, 3))
    with torch.no_grad():
        src = rest_joints[list(PALM)].float()
        mu_s = src.mean(0, keepdim=True)
        rest_dir = bone_directions(rest_joints.float())  # (15,3)
    t0 = o.binary("SUB", mu_d, o.matmul(w.const(mu_s, "palm_rest_centre"), r0t, (1, 3)), (1, 3))
    a = o.matmul(w.const(rest_dir, "rest_directions"), r0t, (nb, 3))
    bones = o.matmul(w.const(np.asarray(BONE_VECTORS, np.float32), "bone_vectors"), target, (nb, 3))
    lengths = o.row_norm(bones, (nb, 3))
    b = o.binary("DIV", bones, o.clamp(lengths, (nb, 1), lo=1e-12), (nb, 3))
    # align_rotation(a, b) = I + [v]x + [v]x^2 / (1 + c), v = a x b, c = a . b
    vx = o.reshape(o.matmul(o.cross(a, b, nb), w.const(np.asarray(SKEW_MAP, np.float32), "skew_map"), (nb, 9)), (nb, 3, 3))
    cos = o.clamp(o.row_dot(a, b, (nb, 3)), (nb, 1), lo=-1 + 1e-6)
    denom = o.reshape(o.binary("ADD", cos, o.scalar(1.0), (nb, 1)), (nb, 1, 1))
    seg = o.binary("ADD", o.binary("ADD", w.const(np.eye(3, dtype=np.float32)[None], "eye"), vx, (nb, 3, 3)),
                   o.binary("DIV", o.matmul(vx, vx, (nb, 3, 3)), denom, (nb, 3, 3)), (nb, 3, 3))
    seg = o.matmul(o.reshape(seg, (3 * nb, 3)), rot, (3 * nb, 3))  # each segment's rotation after the palm's
    seg_t = o.reshape(o.transpose(o.reshape(seg, (nb, 3, 3)), [0, 2, 1], (nb, 3, 3)), (3 * nb, 3))
    anchor = o.binary("ADD", o.matmul(w.const(rest_joints[:1].float(), "rest_wrist"), r0t, (1, 3)), t0, (1, 3))
    params = o.concat([r0t, seg_t, anchor, o.slice(target, [1, 0], [nj - 1, 3])], 0, (k, 3))
    params = o.binary("MUL", params, mirror, (k, 3))
    verts = o.linear(o.transpose(params, [1, 0], (k, 3)), (3, k), skin_basis.T.contiguous(), None)  # (3,V)
    verts = o.binary("ADD", o.transpose(verts, [1, 0], (3, nv)), cam_t, (nv, 3))
    return w.finish([u_in, vt_in, joints, mirror, centre0, cam_t], [verts], "handos decode step, graph B")


class LiteRTDecodeStep:
    """`step_tflite` in two LiteRT interpreters with numpy's SVD between them: the decode step with no torch op."""

    def __init__(self, decoder: torch.nn.Module, rest_joints: torch.Tensor, skin_basis: torch.Tensor,
                 fit_camera: bool, threads: int = 1) -> None:
        a, b = step_tflite(decoder, rest_joints, skin_basis, fit_camera)
        self.a, self.b = _Interpreter(a, threads), _Interpreter(b, threads)

    def run(self, joints_2d: np.ndarray, joints_z: np.ndarray, joint_conf: np.ndarray, camera: np.ndarray,
            world: np.ndarray, roi: np.ndarray) -> tuple[np.ndarray, ...]:
        """N hands as numpy float32: joints_2d (N,21,2), joints_z (N,21), joint_conf (N,21), camera (N,4), world
        (N,21,3), roi (N,5) -> `DecodeStep.forward`'s outputs as numpy arrays."""
        n = joints_2d.shape[0]
        if n == 0:
            nv = self.b.output_shapes[0][0]
            return (np.zeros((0, 21, 2), np.float32), np.zeros((0, 21), np.float32), np.zeros((0, 21, 3), np.float32),
                    np.zeros((0, 3), np.float32), np.zeros((0, nv, 3), np.float32), np.zeros(0, bool),
                    np.zeros(0, np.float32))
        cs = np.stack([np.cos(roi[:, 4]), np.sin(roi[:, 4])], -1).astype(np.float32)  # (N,2)
        firsts = [self.a(joints_2d[i], joints_z[i, :, None], joint_conf[i, :, None], camera[i:i + 1], world[i],
                         roi[i:i + 1], cs[i:i + 1]) for i in range(n)]
        kp, kp_score, joints, cam_t, chi, hscore, rel, cov, centre = (np.stack(x) for x in zip(*firsts))
        is_left = chi.reshape(n) > 0
        mirror = np.where(is_left[:, None, None], np.float32([[-1.0, 1.0, 1.0]]), np.float32(1.0))  # (N,1,3)
        u, _, vt = np.linalg.svd(cov * mirror)  # the palm fit's (N,3,3) cross-covariance, mirrored
        verts = np.stack([self.b(u[i], vt[i], rel[i], mirror[i], centre[i], cam_t[i])[0] for i in range(n)])
        return (kp, kp_score.reshape(n, -1), joints, cam_t.reshape(n, 3), verts, is_left, hscore.reshape(n))


class _Interpreter:
    """A LiteRT interpreter on model bytes: inputs in graph order, outputs as arrays (one call, under a lock)."""

    def __init__(self, model: bytes, threads: int) -> None:
        from handos.foundation.litert import open_interpreter

        self._interp = open_interpreter(threads, model_content=model)
        self._inputs = [d["index"] for d in self._interp.get_input_details()]
        self._outputs = [d["index"] for d in self._interp.get_output_details()]
        self.output_shapes = [tuple(int(v) for v in d["shape"]) for d in self._interp.get_output_details()]
        self._lock = threading.Lock()

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """One invoke: inputs (float32, the graph's shapes) -> outputs."""
        interp = self._interp
        with self._lock:
            for idx, x in zip(self._inputs, inputs):
                interp.set_tensor(idx, x)
            interp.invoke()
            return [interp.get_tensor(idx) for idx in self._outputs]


class LiteRTDecoderTrunk:
    """`trunk_tflite(decoder)` in a LiteRT interpreter (`threads` XNNPACK threads): one hand per invoke."""

    def __init__(self, decoder: torch.nn.Module, threads: int = 1) -> None:
        self.graph = _Interpreter(trunk_tflite(decoder), threads)

    def run(self, evidence: np.ndarray, instance: np.ndarray, u: np.ndarray) -> list[np.ndarray]:
        """N hands: evidence (N,21,E), instance (N,1,I), u (N,21,2) float32 -> [head_2d (N,21,3), head_joint3d
        (N,21,3), head_vertex (N,V',3), head_camera (N,1,1)], one invoke per hand."""
        n = evidence.shape[0]
        out = [self.graph(evidence[k], instance[k], u[k]) for k in range(n)]
        return [np.stack([o[j] for o in out]) if n else np.zeros((0,) + shape, np.float32)
                for j, shape in enumerate(self.graph.output_shapes)]

    def __call__(self, evidence: np.ndarray, instance: np.ndarray, u: np.ndarray) -> list[np.ndarray]:
        """One hand: evidence (21,E), instance (1,I), u (21,2) float32 -> [head_2d (21,3), head_joint3d (21,3),
        head_vertex (V',3), head_camera (1,1)]."""
        return self.graph(evidence, instance, u)
