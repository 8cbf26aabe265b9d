"""The decoder's network part (`HandOSDecoder.trunk`) as a TFLite graph on LiteRT (XNNPACK), for CPU inference.

On one CPU thread the trunk (6 small attention blocks over 21 + 65 queries) costs more in torch's per-op
dispatch than in arithmetic; XNNPACK runs the same maths as one graph. The graph is written here, at load
time, from the decoder's own weights (`trunk_tflite`): any trained or fine-tuned decoder runs on it, and no
file is shipped or converted. Same maths as `HandOSDecoder.trunk` up to float rounding: LayerNorm's affine
and the attention scale (1/4, exact) are folded into the next linear layer; GELU is TFLite's exact (erf) one.

Only the inference path: training, gradients and CUDA use the torch module. Needs `ai-edge-litert` (its
flatbuffer schema writes the graph).

>>> trunk = LiteRTDecoderTrunk(decoder)
>>> h2, joint3d, vertex, log_s = trunk(evidence, instance, u)   # one hand: (21,7), (1,151), (21,2)
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from handos.errors import ModelError

__all__ = ["TFLiteWriter", "trunk_tflite", "LiteRTDecoderTrunk"]


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
        t.type = s.TensorType.FLOAT32 if dtype == "float32" else s.TensorType.INT32
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
            oc = s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, s.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = 1
            self.codes[code] = len(self.codes)
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

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        """The model's bytes (file identifier TFL3), with `inputs` and `outputs` as the graph's."""
        import flatbuffers

        s = self.schema
        g = s.SubGraphT()
        g.tensors, g.inputs, g.outputs, g.operators, g.name = self.tensors, list(inputs), list(outputs), self.operators, "main"
        m = s.ModelT()
        m.version = 3
        m.description = "handos decoder trunk"
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
        """ADD / SUB / MUL with broadcasting."""
        s = self.s
        opts = {"ADD": (s.AddOptionsT, s.BuiltinOptions.AddOptions), "SUB": (s.SubOptionsT, s.BuiltinOptions.SubOptions),
                "MUL": (s.MulOptionsT, s.BuiltinOptions.MulOptions)}[code]
        o = opts[0]()
        o.fusedActivationFunction = s.ActivationFunctionType.NONE
        return self.w.op(getattr(s.BuiltinOperator, code), [a, b], shape, self._name(code.lower()), opts[1], o)

    def gelu(self, x: int, shape: tuple[int, ...]) -> int:
        """Exact (erf) GELU."""
        s = self.s
        o = s.GeluOptionsT()
        o.approximate = False
        return self.w.op(s.BuiltinOperator.GELU, [x], shape, self._name("gelu"), s.BuiltinOptions.GeluOptions, o)

    def mean_last(self, x: int, shape: tuple[int, ...]) -> int:
        """Mean over the last axis, kept."""
        s = self.s
        o = s.ReducerOptionsT()
        o.keepDims = True
        axis = self.w.ints([len(shape) - 1], self._name("axis"))
        return self.w.op(s.BuiltinOperator.MEAN, [x, axis], shape[:-1] + (1,), self._name("mean"),
                         s.BuiltinOptions.ReducerOptions, o)

    def normalize(self, x: int, shape: tuple[int, int], eps: float) -> int:
        """LayerNorm without its affine (folded into the next linear): (x - mean) / sqrt(var + eps)."""
        s = self.s
        xc = self.binary("SUB", x, self.mean_last(x, shape), shape)
        var = self.mean_last(self.binary("MUL", xc, xc, shape), shape)
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

    def slice_rows(self, x: int, start: int, rows: int, shape: tuple[int, int]) -> int:
        """Rows start:start+rows of (T, C)."""
        s = self.s
        return self.w.op(s.BuiltinOperator.SLICE, [x, self.w.ints([start, 0], self._name("begin")),
                                                   self.w.ints([rows, shape[1]], self._name("size"))],
                         (rows, shape[1]), self._name("slice"), s.BuiltinOptions.SliceOptions, s.SliceOptionsT())

    def slice_cols(self, x: int, start: int, cols: int, shape: tuple[int, int]) -> int:
        """Columns start:start+cols of (T, C)."""
        s = self.s
        return self.w.op(s.BuiltinOperator.SLICE, [x, self.w.ints([0, start], self._name("begin")),
                                                   self.w.ints([shape[0], cols], self._name("size"))],
                         (shape[0], cols), self._name("slice"), s.BuiltinOptions.SliceOptions, s.SliceOptionsT())

    def concat_rows(self, xs: list[int], shape: tuple[int, int]) -> int:
        """Stack (T_k, C) along the tokens -> `shape`."""
        s = self.s
        o = s.ConcatenationOptionsT()
        o.axis = 0
        o.fusedActivationFunction = s.ActivationFunctionType.NONE
        return self.w.op(s.BuiltinOperator.CONCATENATION, xs, shape, self._name("concat"),
                         s.BuiltinOptions.ConcatenationOptions, o)

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

    inputs: evidence (21, E), instance (1, I), u (21, 2) (see `HandOSDecoder.evidence`);
    outputs: head_2d (21, 3), head_joint3d (21, 3), head_vertex (V', 3), head_camera (1, 1), raw (unscaled).
    """
    from handos.hand.skeleton import NUM_JOINTS

    w = TFLiteWriter()
    ops = _Ops(w)
    nj, nc = NUM_JOINTS, int(decoder.num_coarse)
    d = int(decoder.config.d_model)
    n_ev = int(decoder.evidence[0].weight.shape[1])
    n_inst = int(decoder.instance[0].weight.shape[1])
    ev_in = w.tensor((nj, n_ev), "evidence")
    inst_in = w.tensor((1, n_inst), "instance")
    u_in = w.tensor((nj, 2), "u")
    with torch.no_grad():
        x = ops.mlp(ev_in, (nj, n_ev), decoder.evidence)
        inst = ops.mlp(inst_in, (1, n_inst), decoder.instance)
        x = ops.binary("ADD", x, w.const(decoder.joint_embed, "joint_embed"), (nj, d))
        x = ops.binary("ADD", x, inst, (nj, d))
        for layer in decoder.layers_2d:
            x = ops.block(x, nj, layer, None)
        h2 = ops.norm_linear(x, (nj, d), decoder.norm_2d, decoder.head_2d.weight, decoder.head_2d.bias)  # (21,3)
        u_ref = ops.binary("ADD", u_in, ops.slice_cols(h2, 0, 2, (nj, 3)), (nj, 2))
        x = ops.binary("ADD", x, ops.linear(u_ref, (nj, 2), decoder.refined_embed.weight, decoder.refined_embed.bias),
                       (nj, d))
        prior = decoder.vertex_embed + torch.nn.functional.pad(
            decoder.template_embed(decoder.template[decoder.coarse_idx] / decoder_world_unit()), (0, 0, 0, 1))
        lifted = ops.linear(ops.transpose(x, [1, 0], (nj, d)), (d, nj), decoder.lifting, None)  # (d, V'+1)
        lifted = ops.binary("ADD", ops.transpose(lifted, [1, 0], (d, nc + 1)), w.const(prior, "prior"), (nc + 1, d))
        tokens = nj + nc + 1
        t = ops.concat_rows([x, lifted], (tokens, d))
        for layer in decoder.layers_3d:
            t = ops.block(t, tokens, layer, decoder.attn_bias)
        tn = ops.normalize(t, (tokens, d), decoder.norm_3d.eps)
        heads = []
        for head, start, rows in ((decoder.head_joint3d, 0, nj), (decoder.head_vertex, nj, nc),
                                  (decoder.head_camera, nj + nc, 1)):
            wt, bt = fold_norm(decoder.norm_3d, head.weight, head.bias)
            heads.append(ops.linear(ops.slice_rows(tn, start, rows, (tokens, d)), (rows, d), wt, bt))
    return w.finish([ev_in, inst_in, u_in], [h2] + heads)


def decoder_world_unit() -> float:
    """The decoder's length unit in metres (`decoder.WORLD_UNIT_M`)."""
    from handos.model.decoder import WORLD_UNIT_M

    return WORLD_UNIT_M


class LiteRTDecoderTrunk:
    """`trunk_tflite(decoder)` in a LiteRT interpreter (`threads` XNNPACK threads): one hand per invoke."""

    def __init__(self, decoder: torch.nn.Module, threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError("the LiteRT decoder needs ai-edge-litert; use the torch decoder") from None
        from handos.foundation.litert import _quiet_stderr

        with _quiet_stderr():
            self._interp = Interpreter(model_content=trunk_tflite(decoder), num_threads=max(1, int(threads)))
            self._interp.allocate_tensors()
        self._inputs = [d["index"] for d in self._interp.get_input_details()]
        self._outputs = [d["index"] for d in self._interp.get_output_details()]
        self.output_shapes = [tuple(int(v) for v in d["shape"]) for d in self._interp.get_output_details()]
        self._lock = threading.Lock()

    def run(self, evidence: np.ndarray, instance: np.ndarray, u: np.ndarray) -> list[np.ndarray]:
        """N hands: evidence (N,21,E), instance (N,1,I), u (N,21,2) float32 -> [head_2d (N,21,3), head_joint3d
        (N,21,3), head_vertex (N,V',3), head_camera (N,1,1)], one invoke per hand."""
        n = evidence.shape[0]
        if n == 1:
            return [h[None] for h in self(evidence[0], instance[0], u[0])]
        out = [self(evidence[k], instance[k], u[k]) for k in range(n)]
        return [np.stack([o[j] for o in out]) if n else np.zeros((0,) + tuple(s), np.float32)
                for j, s in enumerate(self.output_shapes)]

    def __call__(self, evidence: np.ndarray, instance: np.ndarray, u: np.ndarray) -> list[np.ndarray]:
        """One hand: evidence (21,E), instance (1,I), u (21,2) float32 -> [head_2d (21,3), head_joint3d (21,3),
        head_vertex (V',3), head_camera (1,1)]."""
        interp = self._interp
        with self._lock:
            for idx, x in zip(self._inputs, (evidence, instance, u)):
                interp.set_tensor(idx, x)
            interp.invoke()
            return [interp.get_tensor(idx) for idx in self._outputs]
