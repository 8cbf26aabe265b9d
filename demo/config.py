"""Limits and defaults of the demo, overridable by environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_int(name: str, default: int) -> int:
    """An integer from the environment, or the default when unset or not a number."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _env_float(name: str, default: float) -> float:
    """A float from the environment, or the default when unset or not a number."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _cpus() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class DemoConfig:
    """What the demo accepts and how many requests it runs at once."""

    max_file_size: str = field(default_factory=lambda: os.environ.get("HANDOS_DEMO_MAX_FILE_SIZE", "50mb"))
    max_clip_seconds: float = field(default_factory=lambda: _env_float("HANDOS_DEMO_MAX_CLIP_SECONDS", 20.0))
    max_clip_frames: int = field(default_factory=lambda: _env_int("HANDOS_DEMO_MAX_CLIP_FRAMES", 600))
    max_clip_pixels: int = 1920 * 1080  # frames above this are refused (downscale first)
    image_concurrency: int = field(default_factory=lambda: _env_int("HANDOS_DEMO_IMAGE_CONCURRENCY", 2))
    clip_concurrency: int = 1
    queue_max_size: int = 64
    default_device: str = field(default_factory=lambda: os.environ.get("HANDOS_DEVICE", "auto"))
    default_threshold: float = 0.5
    default_max_hands: int = 4
    ls_url_env: str = "LABEL_STUDIO_URL"
    ls_key_env: str = "LABEL_STUDIO_API_KEY"
    state_ttl_s: int = 3600
    # intra-op threads per request: the CPU shared among the requests that run at once (1 on 2 cores);
    # more threads than free cores make OpenMP spin and one request many times slower
    torch_threads: int = field(default_factory=lambda: _env_int(
        "HANDOS_DEMO_TORCH_THREADS", max(1, _cpus() // max(1, _env_int("HANDOS_DEMO_IMAGE_CONCURRENCY", 2)))))
