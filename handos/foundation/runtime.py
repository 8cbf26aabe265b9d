"""Which runtime runs the foundation's two networks: torch (the replay in `nets`) or LiteRT (`litert`).

- "torch": the safetensors replayed by torch, on any device, with gradients when asked (training,
  fine-tuning); the only runtime that gives the landmark net's `features` / `feature_map`.
- "litert": MediaPipe's original .tflite graphs on LiteRT's XNNPACK, CPU only, inference only; faster.
- "auto": LiteRT on the CPU when `ai_edge_litert` imports, else torch (always torch on CUDA).

Fine-tuned nets (a weights folder's own `*_full.safetensors`) exist only as torch weights: "auto" runs
each of them on torch (the other, untouched net may still run on LiteRT) and "litert" refuses them, so
a fine-tuned net never silently gives way to the original .tflite.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from handos.errors import ConfigError, ModelError
from handos.foundation import RUNTIME_HELP, RUNTIMES

__all__ = ["RUNTIMES", "RUNTIME_HELP", "resolve_runtime", "default_threads", "load_nets", "torch_single_threaded"]



def default_threads() -> int:
    """LiteRT threads when none are given: torch's intra-op thread count (one per core unless set otherwise)."""
    return max(1, torch.get_num_threads())


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """'auto' | 'torch' | 'litert' on `device` -> 'torch' or 'litert' (ConfigError / ModelError when impossible)."""
    from handos.foundation.litert import LITERT_REQUIREMENT, litert_available

    name = (runtime or "auto").strip().lower()
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; use {', '.join(RUNTIMES)}")
    if name == "auto":
        return "litert" if device.type == "cpu" and litert_available() else "torch"
    if name == "litert":
        if device.type != "cpu":
            raise ConfigError(f"runtime 'litert' runs on the CPU only, not on {device}; use runtime torch or auto")
        if not litert_available():
            raise ModelError(f"runtime 'litert' needs {LITERT_REQUIREMENT} (pip install {LITERT_REQUIREMENT}); "
                             "or use runtime torch")
    return name


def load_nets(runtime: str, device: torch.device, dtype: torch.dtype = torch.float32, threads: int | None = None,
              palm_path: Path | None = None, landmark_path: Path | None = None) -> tuple[object, object]:
    """(palm detector, landmark net) on the resolved runtime; `*_path`: fine-tuned torch weights, else shipped.

    A fine-tuned net runs on torch under 'auto' and is refused by 'litert' (module docstring).
    """
    from handos.foundation import litert, nets

    chosen = resolve_runtime(runtime, device)
    requested = (runtime or "auto").strip().lower()
    tuned = [p for p in (palm_path, landmark_path) if p is not None]
    if requested == "litert" and tuned:
        raise ModelError(f"{tuned[0].name} in {tuned[0].parent} is a fine-tuned net that only the torch runtime runs; "
                         "use runtime auto or torch")
    n = default_threads() if threads is None else int(threads)
    if chosen == "litert" and palm_path is None:
        palm = litert.load_litert_palm_detector(n)
    else:
        palm = nets.load_palm_detector(device, dtype, path=palm_path)
    if chosen == "litert" and landmark_path is None:
        landmark = litert.load_litert_landmark_net(n)
    else:
        landmark = nets.load_landmark_net(device, dtype, path=landmark_path)
    return palm, landmark


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"depth": 0, "saved": 1}


@contextlib.contextmanager
def torch_single_threaded(active: bool = True) -> Iterator[None]:
    """torch's CPU ops on one thread inside the block (when `active`); process-wide, re-entrant, restored after.

    With both nets on LiteRT, what torch still does per image (crop conversion, box decoding, NMS, ROIs, the
    decoder) is small-tensor work that gains nothing from more threads, while torch's OpenMP threads spin-wait
    after each parallel region on the cores XNNPACK's threads need next. Measured on 2 idle cores (ge2019,
    LiteRT on 2 threads): the foundation 24.3 -> 16.2 ms and the full pipeline 30.7 -> 20.9 ms per image.
    """
    if not active:
        yield
        return
    with _THREADS_LOCK:
        if _THREADS_STATE["depth"] == 0:
            _THREADS_STATE["saved"] = torch.get_num_threads()
            if _THREADS_STATE["saved"] != 1:
                torch.set_num_threads(1)
        _THREADS_STATE["depth"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["depth"] -= 1
            if _THREADS_STATE["depth"] == 0 and _THREADS_STATE["saved"] != 1:
                torch.set_num_threads(_THREADS_STATE["saved"])
