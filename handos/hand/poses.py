"""Anatomical joint limits, named pose presets and a sampler of plausible hand poses.

A finger pose is 15 rows (thumb1-3, index1-3, middle1-3, ring1-3, pinky1-3) of axis-angle vectors
in the rest-pose axes of the canonical frame (the MANO convention). Limits and presets are written
in each joint's anatomical frame instead: local = (flexion, abduction, twist) components of the same
rotation vector, with world = frame @ local (frames from `template.joint_frames`).
Positive flexion curls toward the palm; positive abduction swings toward the thumb side; twist
turns about the bone. The left hand uses the same numbers (it is the mirror image).
"""
from __future__ import annotations

import math

import torch

# per pose row (15), per local axis (flex, abd, twist): (low, high) in radians
_FINGER_LIMITS = [
    [(-0.30, 1.65), (-0.35, 0.35), (-0.15, 0.15)],  # MCP
    [(-0.05, 2.00), (-0.06, 0.06), (-0.08, 0.08)],  # PIP
    [(-0.20, 1.50), (-0.05, 0.05), (-0.08, 0.08)],  # DIP
]
_THUMB_LIMITS = [
    [(-0.45, 0.95), (-0.45, 1.05), (-0.45, 0.70)],  # CMC
    [(-0.25, 1.00), (-0.20, 0.20), (-0.25, 0.25)],  # MCP
    [(-0.35, 1.40), (-0.08, 0.08), (-0.10, 0.10)],  # IP
]
LIMITS = torch.tensor(_THUMB_LIMITS + _FINGER_LIMITS * 4, dtype=torch.float32)  # (15, 3, 2)
FINGER_ORDER = ("thumb", "index", "middle", "ring", "pinky")


def _pose(thumb=(0, 0, 0, 0, 0), index=(0, 0, 0, 0), middle=(0, 0, 0, 0), ring=(0, 0, 0, 0),
          pinky=(0, 0, 0, 0)) -> torch.Tensor:
    """Local angles (15, 3) from thumb (cmc flex, cmc abd, cmc twist, mcp flex, ip flex) and fingers
    (mcp flex, pip flex, dip flex, mcp abd)."""
    out = torch.zeros(15, 3)
    cf, ca, ct, mf, ipf = thumb
    out[0] = torch.tensor([cf, ca, ct])
    out[1, 0], out[2, 0] = mf, ipf
    for f, (m, p, d, a) in enumerate((index, middle, ring, pinky), start=1):
        out[3 * f, 0], out[3 * f, 1] = m, a
        out[3 * f + 1, 0], out[3 * f + 2, 0] = p, d
    return out


# name -> local angles (15, 3)
PRESETS: dict[str, torch.Tensor] = {
    "flat": _pose(),
    "open": _pose(),  # an alias of flat
    "relaxed": _pose((0.15, 0.25, 0.1, 0.2, 0.25), (0.25, 0.35, 0.2, 0.02), (0.3, 0.4, 0.25, 0), (0.35, 0.45, 0.25, -0.03),
                     (0.4, 0.5, 0.3, -0.08)),
    "spread": _pose((-0.3, -0.2, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.30), (0, 0, 0, 0.05), (0, 0, 0, -0.25),
                    (0.0, 0.0, 0.0, -0.35)),
    "fist": _pose((0.58, 0.12, 0.08, 0.3, 1.3), (1.55, 1.75, 0.9, 0.0), (1.6, 1.8, 0.9, 0), (1.6, 1.8, 0.9, 0),
                  (1.6, 1.75, 0.9, 0)),
    "point": _pose((0.64, 0.14, 0.0, 0.76, 0.78), (0.0, 0.05, 0.0, 0.05), (1.6, 1.8, 0.9, 0), (1.6, 1.8, 0.9, 0),
                   (1.6, 1.75, 0.9, 0)),
    "pinch": _pose((0.4, 0.18, 0.03, 0.22, 0.1), (0.85, 0.75, 0.35, 0.05), (0.6, 0.55, 0.3, 0), (0.5, 0.5, 0.3, -0.05),
                   (0.45, 0.45, 0.3, -0.1)),
    "grasp": _pose((0.5, 0.35, 0.1, 0.15, 0.15), (0.95, 0.95, 0.6, 0.0), (1.0, 1.0, 0.6, 0), (1.0, 1.0, 0.6, 0),
                   (1.0, 1.0, 0.6, 0)),
    "ok": _pose((0.4, 0.23, 0.08, 0.27, 0.13), (0.95, 0.95, 0.45, 0.05), (0.15, 0.1, 0.05, 0), (0.2, 0.1, 0.05, -0.08),
                (0.25, 0.1, 0.05, -0.18)),
    "peace": _pose((0.64, 0.14, 0.0, 0.76, 0.78), (0.0, 0.0, 0.0, 0.22), (0.0, 0.0, 0.0, -0.15), (1.6, 1.8, 0.9, 0),
                   (1.6, 1.75, 0.9, 0)),
    "thumbs_up": _pose((-0.2, -0.1, 0.0, 0.0, 0.0), (1.55, 1.75, 0.9, 0.0), (1.6, 1.8, 0.9, 0), (1.6, 1.8, 0.9, 0),
                       (1.6, 1.75, 0.9, 0)),
    "claw": _pose((0.4, 0.3, 0.1, 0.3, 0.6), (0.2, 1.3, 1.0, 0.1), (0.2, 1.3, 1.0, 0), (0.2, 1.3, 1.0, -0.1),
                  (0.2, 1.3, 1.0, -0.2)),
    "three": _pose((0.64, 0.14, 0.0, 0.76, 0.78), (0.0, 0.0, 0.0, 0.15), (0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, -0.15),
                   (1.6, 1.75, 0.9, 0)),
}


def clamp_local(local: torch.Tensor) -> torch.Tensor:
    """Clamp local angles (..., 15, 3) to the joint limits."""
    lim = LIMITS.to(local)
    return torch.maximum(torch.minimum(local, lim[..., 1]), lim[..., 0])


def within_limits(local: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
    """(...) bool: every local angle of (..., 15, 3) is inside its limits."""
    lim = LIMITS.to(local)
    return ((local >= lim[..., 0] - tol) & (local <= lim[..., 1] + tol)).flatten(-2).all(-1)


def sample_local(n: int, generator: torch.Generator | None = None, kind: str | None = None) -> torch.Tensor:
    """(n, 15, 3) local angles of plausible poses: presets, blends of two presets, and random natural
    curls (fingers curl with coupled PIP/DIP), all with noise and clamped to the limits.

    kind: None (the mixture), "uniform" (independent uniform angles within the limits), "natural"
    (random curls only), "blend" (preset blends only) or a preset name (that preset plus noise).
    """
    g = generator
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    randn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    lim = LIMITS
    if kind == "uniform":
        return lim[..., 0] + rand(n, 15, 3) * (lim[..., 1] - lim[..., 0])
    names = list(PRESETS)
    table = torch.stack([PRESETS[k] for k in names])  # (P, 15, 3)
    if kind in PRESETS:
        base = PRESETS[kind].expand(n, 15, 3).clone()
        return clamp_local(base + 0.06 * randn(n, 15, 3) * (lim[..., 1] - lim[..., 0]) / 2)
    if kind not in (None, "natural", "blend"):
        raise ValueError(f"unknown pose kind {kind!r}; one of None, 'uniform', 'natural', 'blend', {names}")
    # blends of two presets, per finger mixing weights
    a = table[torch.randint(len(names), (n,), generator=g)]
    b = table[torch.randint(len(names), (n,), generator=g)]
    t = rand(n, 5, 1, 1).expand(n, 5, 3, 1).reshape(n, 15, 1)
    t = torch.where(rand(n, 1, 1) < 0.3, t[:, :1].expand(n, 15, 1), t)
    blend = a + (b - a) * t
    # natural random curls
    curl = rand(n, 5) ** 0.8  # (n, 5)
    nat = torch.zeros(n, 15, 3)
    for f in range(1, 5):
        c = curl[:, f]
        nat[:, 3 * f, 0] = c * 1.55 + 0.15 * randn(n)
        nat[:, 3 * f + 1, 0] = c * 1.9 + 0.15 * randn(n)
        nat[:, 3 * f + 2, 0] = nat[:, 3 * f + 1, 0] * (0.55 + 0.2 * rand(n))
        nat[:, 3 * f, 1] = (0.25 - 0.17 * f) * rand(n) * (1 - c) + 0.05 * randn(n)
    c = curl[:, 0]
    nat[:, 0] = torch.stack([c * 0.9 - 0.2, rand(n) * 1.1 - 0.2, c * 0.6 - 0.1], -1)
    nat[:, 1, 0] = c * 0.8 + 0.1 * randn(n)
    nat[:, 2, 0] = c * 1.0 + 0.15 * randn(n)
    if kind == "natural":
        pick = torch.ones(n, dtype=torch.bool)
    elif kind == "blend":
        pick = torch.zeros(n, dtype=torch.bool)
    else:
        pick = rand(n) < 0.35
    local = torch.where(pick[:, None, None], nat, blend)
    local = local + 0.04 * randn(n, 15, 3) * (lim[..., 1] - lim[..., 0]) / 2
    return clamp_local(local)


def deg(x: float) -> float:
    """Degrees to radians."""
    return x * math.pi / 180.0
