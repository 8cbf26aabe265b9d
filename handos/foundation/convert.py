"""Convert MediaPipe's hand tflite networks (from the `mediapipe==0.10.21` wheel) to safetensors, and ship the
original .tflite graphs beside them.

    python -m handos.foundation.convert --wheel mediapipe-0.10.21-...whl [--out handos/weights]
    python -m handos.foundation.convert --download      # pip download --no-deps mediapipe==0.10.21

Each output file holds the weights in torch layout (float16, exactly the tflite float16 values:
the graphs DEQUANTIZE float16 -> float32, folded here) and, in the safetensors header metadata
under "handos.graph", the op list that `handos.foundation.nets.TFLiteGraph` executes. Also writes
`NOTICE` (Apache-2.0, source paths inside the wheel, sha256 of the wheel and each tflite file), and copies
each original `.tflite` file unchanged (byte for byte) next to its safetensors: the LiteRT runtime
(`handos.foundation.litert`) runs those on the CPU, the torch runtime the safetensors.
Needs the `tflite` package (dev extra); the run time needs only torch + safetensors (+ ai-edge-litert for LiteRT).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from handos.errors import ConfigError, HandosError, ModelError
from handos.foundation.tflite_reader import TFLiteModel, read_tflite
from handos.weights import WEIGHTS_DIR

MEDIAPIPE_VERSION = "0.10.21"
GRAPH_FORMAT = "handos.tflite-graph/1"

# name -> (path inside the wheel, semantic names of the tflite outputs in order, input size)
MODELS: dict[str, tuple[str, list[str], int]] = {
    "palm_detection_full": (
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        ["regressors", "scores"],
        192,
    ),
    "hand_landmark_full": (
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        ["landmarks", "presence", "handedness", "world"],
        224,
    ),
}


def _same_pad(size: int, k: int, stride: int, dilation: int = 1) -> list[int]:
    """TF 'SAME' padding for one spatial axis -> [before, after] (extra pixel goes after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return [total // 2, total - total // 2]


def _conv_pad(opts: dict[str, Any], in_shape: tuple[int, ...], kh: int, kw: int) -> list[int]:
    """Explicit [top, bottom, left, right] padding of a conv/pool on an NHWC input."""
    if opts["padding"] == "VALID":
        return [0, 0, 0, 0]
    dh, dw = opts.get("dilation", [1, 1])
    return _same_pad(in_shape[1], kh, opts["stride"][0], dh) + _same_pad(in_shape[2], kw, opts["stride"][1], dw)


def build_graph(model: TFLiteModel, output_names: list[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Turn a parsed tflite model into (graph spec, params in torch layout); DEQUANTIZE is folded."""
    consts: dict[int, np.ndarray] = {t.index: t.data for t in model.tensors if t.data is not None}
    params: dict[str, np.ndarray] = {}
    ops: list[dict[str, Any]] = []
    shape = {t.index: t.shape for t in model.tensors}

    def const(i: int) -> np.ndarray:
        if i not in consts:
            raise ModelError(f"tensor {i} ({model.tensors[i].name}) should be constant")
        return consts[i]

    def v(i: int) -> str:
        return f"t{i}"

    for k, op in enumerate(model.ops):
        o = op.options
        ins = [i for i in op.inputs if i >= 0]
        out = op.outputs[0]
        p = f"op{k:03d}"
        if op.name == "DEQUANTIZE":
            consts[out] = const(ins[0])  # float16 kept as is; the loader casts to the run dtype
            continue
        if op.name == "CONV_2D":
            w = const(ins[1])  # (O, kh, kw, I)
            params[p + ".weight"] = np.ascontiguousarray(w.transpose(0, 3, 1, 2))
            params[p + ".bias"] = const(ins[2])
            ops.append(dict(op="conv", inputs=[v(ins[0])], output=v(out), weight=p + ".weight", bias=p + ".bias",
                            stride=o["stride"], dilation=o["dilation"], groups=1, activation=o["activation"],
                            pad=_conv_pad(o, shape[ins[0]], w.shape[1], w.shape[2])))
        elif op.name == "DEPTHWISE_CONV_2D":
            w = const(ins[1])  # (1, kh, kw, C*m)
            params[p + ".weight"] = np.ascontiguousarray(w.transpose(3, 0, 1, 2))  # (C*m, 1, kh, kw)
            params[p + ".bias"] = const(ins[2])
            ops.append(dict(op="conv", inputs=[v(ins[0])], output=v(out), weight=p + ".weight", bias=p + ".bias",
                            stride=o["stride"], dilation=o["dilation"], groups=shape[ins[0]][3],
                            activation=o["activation"], pad=_conv_pad(o, shape[ins[0]], w.shape[1], w.shape[2])))
        elif op.name == "PRELU":
            alpha = const(ins[1])
            if alpha.size != shape[ins[0]][-1]:
                raise ModelError(f"op {k}: PRELU alpha {alpha.shape} is not per-channel")
            params[p + ".alpha"] = alpha.reshape(-1)
            ops.append(dict(op="prelu", inputs=[v(ins[0])], output=v(out), alpha=p + ".alpha"))
        elif op.name == "ADD":
            names = []
            for j, i in enumerate(ins):
                if i in consts:
                    c = consts[i]
                    params[f"{p}.const{j}"] = c
                    names.append(f"param:{p}.const{j}")
                else:
                    names.append(v(i))
            ops.append(dict(op="add", inputs=names, output=v(out), activation=o["activation"]))
        elif op.name == "MAX_POOL_2D":
            kh, kw = o["filter"]
            ops.append(dict(op="maxpool", inputs=[v(ins[0])], output=v(out), kernel=[kh, kw], stride=o["stride"],
                            pad=_conv_pad(o, shape[ins[0]], kh, kw), activation=o["activation"]))
        elif op.name == "PAD":
            ops.append(dict(op="pad", inputs=[v(ins[0])], output=v(out), paddings=const(ins[1]).tolist()))
        elif op.name == "RESIZE_BILINEAR":
            ops.append(dict(op="resize_bilinear", inputs=[v(ins[0])], output=v(out), size=const(ins[1]).tolist(),
                            align_corners=o["align_corners"], half_pixel_centers=o["half_pixel_centers"]))
        elif op.name == "RESHAPE":
            new = [int(s) for s in (const(ins[1]) if len(ins) > 1 else shape[out])]
            ops.append(dict(op="reshape", inputs=[v(ins[0])], output=v(out), shape=[-1] + new[1:]))
            if new.count(-1) + 1 > 2 or len(new) == 4:
                raise ModelError(f"op {k}: unsupported RESHAPE to {new}")
        elif op.name == "CONCATENATION":
            ops.append(dict(op="concat", inputs=[v(i) for i in ins], output=v(out), axis=o["axis"],
                            activation=o["activation"]))
        elif op.name == "MEAN":
            ops.append(dict(op="mean", inputs=[v(ins[0])], output=v(out), axes=const(ins[1]).tolist(),
                            keep_dims=o["keep_dims"]))
        elif op.name == "FULLY_CONNECTED":
            params[p + ".weight"] = const(ins[1])  # (out, in), torch layout already
            if len(ins) > 2:
                params[p + ".bias"] = const(ins[2])
            ops.append(dict(op="fc", inputs=[v(ins[0])], output=v(out), weight=p + ".weight",
                            bias=p + ".bias" if len(ins) > 2 else None, activation=o["activation"]))
        elif op.name == "LOGISTIC":
            ops.append(dict(op="logistic", inputs=[v(ins[0])], output=v(out)))
        else:
            raise ModelError(f"op {k}: tflite op {op.name} is not supported by the converter")
    if len(output_names) != len(model.outputs):
        raise ModelError(f"expected {len(output_names)} outputs, graph has {len(model.outputs)}")
    outputs = {name: v(i) for name, i in zip(output_names, model.outputs)}
    taps: dict[str, str] = {}
    means = [op for op in ops if op["op"] == "mean"]
    if means:  # the landmark net: last conv map and its global average = the features we expose
        taps = {"feature_map": means[-1]["inputs"][0], "features": means[-1]["output"]}
    inp = model.tensors[model.inputs[0]]
    graph = dict(format=GRAPH_FORMAT, input=v(inp.index), input_shape_nhwc=list(inp.shape),
                 outputs=outputs, taps=taps, ops=ops)
    return graph, params


def sha256(path_or_bytes: Path | bytes) -> str:
    """Hex sha256 of a file or of bytes."""
    if isinstance(path_or_bytes, bytes):
        return hashlib.sha256(path_or_bytes).hexdigest()
    h = hashlib.sha256()
    with open(path_or_bytes, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_wheel(wheel: Path, out_dir: Path = WEIGHTS_DIR) -> dict[str, Path]:
    """Read both tflite files from the mediapipe wheel and write safetensors + NOTICE into out_dir."""
    from safetensors.numpy import save_file

    wheel = Path(wheel)
    if not wheel.is_file():
        raise ConfigError(f"wheel not found: {wheel}; pass --wheel PATH or --download")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    notice_rows = []
    with zipfile.ZipFile(wheel) as zf:
        for name, (member, outputs, _) in MODELS.items():
            try:
                buf = zf.read(member)
            except KeyError as e:
                raise ConfigError(f"{member} not in {wheel.name}; use mediapipe=={MEDIAPIPE_VERSION}") from e
            graph, params = build_graph(read_tflite(buf), outputs)
            meta = {"handos.graph": json.dumps(graph, separators=(",", ":")), "source": member,
                    "source_sha256": sha256(buf), "license": "Apache-2.0",
                    "mediapipe_version": MEDIAPIPE_VERSION}
            path = out_dir / f"{name}.safetensors"
            save_file({k: np.ascontiguousarray(a) for k, a in sorted(params.items())}, str(path), metadata=meta)
            path.chmod(0o644)
            written[name] = path
            original = out_dir / f"{name}.tflite"  # the graph itself, for the LiteRT runtime
            original.write_bytes(buf)
            original.chmod(0o644)
            written[name + ".tflite"] = original
            notice_rows.append(f"  {path.name} (converted) and {original.name} (the original file)\n"
                               f"    from: {member}\n    tflite sha256: {sha256(buf)}\n")
    notice = (
        "handos/weights: converted third-party weights\n"
        "==============================================\n\n"
        "palm_detection_full.safetensors and hand_landmark_full.safetensors are MediaPipe's palm\n"
        "detection and hand landmark models (Copyright Google LLC), converted to safetensors by\n"
        "`python -m handos.foundation.convert` with no change to any value (float16 weights as stored,\n"
        "convolution kernels transposed to torch layout, DEQUANTIZE folded).\n"
        "palm_detection_full.tflite and hand_landmark_full.tflite are the original model files, copied\n"
        "unchanged from the wheel by the same command (their sha256 below).\n\n"
        "License: Apache License 2.0, https://www.apache.org/licenses/LICENSE-2.0\n"
        "(the license of the MediaPipe project, https://github.com/google-ai-edge/mediapipe).\n\n"
        f"Source: the PyPI wheel mediapipe=={MEDIAPIPE_VERSION}\n"
        f"  {wheel.name}\n  wheel sha256: {sha256(wheel)}\n\n"
        "Files:\n" + "\n".join(notice_rows)
    )
    (out_dir / "NOTICE").write_text(notice)
    return written


def download_wheel(dest: Path) -> Path:
    """`pip download --no-deps mediapipe==0.10.21` (this Python's platform) into dest; return the wheel."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), f"mediapipe=={MEDIAPIPE_VERSION}"]
    if sys.version_info[:2] != (3, 11):  # the wheel is platform-specific; the tflite files are identical
        cmd[4:4] = ["--python-version", "3.11", "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("mediapipe-*.whl"))
    if r.returncode != 0 or not wheels:
        raise ConfigError(f"pip download mediapipe=={MEDIAPIPE_VERSION} failed: {r.stderr.strip().splitlines()[-1:]}")
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    """CLI: convert the mediapipe wheel's hand models to handos/weights/*.safetensors (+ the original .tflite)."""
    ap = argparse.ArgumentParser(prog="python -m handos.foundation.convert", description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--wheel", type=Path, help="path to mediapipe-0.10.21-*.whl")
    src.add_argument("--download", action="store_true", help="pip download the wheel into a temp dir (default)")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder (default: handos/weights)")
    args = ap.parse_args(argv)
    try:
        if args.wheel:
            written = convert_wheel(args.wheel, args.out)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                written = convert_wheel(download_wheel(Path(tmp)), args.out)
    except HandosError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written.values():
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    print(f"wrote {args.out / 'NOTICE'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
