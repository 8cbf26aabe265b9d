"""Temporal smoothing of tracked hands: the One-Euro filter (Casiez et al., CHI 2012), vectorised.

One filter state per track; every quantity of a hand is filtered in one numpy step:
- 2D keypoints and the box: one adaptive cutoff per joint (speed of that joint, in hand sizes per second);
- 3D joints, vertices and cam_t: ONE cutoff per hand (from its fastest 3D joint), so the same convex
  weights apply to all three and the linear ties between them survive smoothing
  (joints_3d = regressor @ vertices, cam_t = joints_3d[wrist]).
Speeds are normalised by the hand's size, so the same parameters work for near and far hands.
The filter is causal (no look-ahead), so it runs while the clip streams.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from handos.io.schema import Hand


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro parameters; speeds are in hand sizes per second."""

    min_cutoff: float = 1.0  # Hz: cutoff when the hand is still (lower = smoother, more lag at rest)
    beta: float = 5.0  # cutoff grows by beta Hz per (hand size / s) of speed (higher = less lag when moving)
    d_cutoff: float = 1.0  # Hz: cutoff of the speed estimate
    max_gap_s: float = 0.5  # a track unseen for longer restarts its filter (no smoothing across gaps)


def alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    """Exponential smoothing factor for a cutoff (Hz) and a time step (s): 1 = no smoothing."""
    r = 2.0 * math.pi * np.asarray(cutoff, dtype=np.float64) * dt
    return r / (r + 1.0)


def one_euro_step(x: np.ndarray, x_prev: np.ndarray, dx_prev: np.ndarray, dt: float, scale: np.ndarray,
                  cfg: OneEuroConfig, per: str = "point") -> tuple[np.ndarray, np.ndarray]:
    """One filter step on (N, P, D) points; returns (x_hat, dx_hat); cutoff per point or per hand (`per`)."""
    a_d = alpha(cfg.d_cutoff, dt)
    dx = (x - x_prev) / dt  # (N, P, D)
    dx_hat = a_d * dx + (1.0 - a_d) * dx_prev  # (N, P, D)
    speed = np.linalg.norm(dx_hat, axis=-1) / scale[:, None]  # (N, P) hand sizes / s
    if per == "hand":
        speed = speed.max(axis=1, keepdims=True)  # (N, 1)
    a = alpha(cfg.min_cutoff + cfg.beta * speed, dt)[..., None]  # (N, P|1, 1)
    return a * x + (1.0 - a) * x_prev, dx_hat


@dataclass
class _State:
    """Filter state of one track."""

    t: float
    kp: np.ndarray  # (23, 2): 21 keypoints + 2 box corners
    dkp: np.ndarray
    x3: np.ndarray  # (P3, 3): 21 joints + cam_t + vertices
    dx3: np.ndarray


def _pack2d(h: Hand) -> np.ndarray:
    """Keypoints and box corners as one (23, 2) array."""
    return np.concatenate([np.asarray(h.keypoints_2d, np.float64), np.asarray(h.bbox_xyxy, np.float64).reshape(2, 2)])


def _pack3d(h: Hand) -> np.ndarray:
    """3D joints, cam_t and vertices as one (22 + V, 3) array."""
    parts = [np.asarray(h.joints_3d, np.float64), np.asarray(h.cam_t, np.float64).reshape(1, 3)]
    if h.vertices is not None:
        parts.append(np.asarray(h.vertices, np.float64))
    return np.concatenate(parts)


def _size_2d(kp: np.ndarray) -> np.ndarray:
    """(N,) hand size in px: the longer side of the keypoints' box (at least 8 px)."""
    ext = kp[:, :21].max(axis=1) - kp[:, :21].min(axis=1)  # (N, 2)
    return np.maximum(ext.max(axis=1), 8.0)


def _size_3d(x3: np.ndarray) -> np.ndarray:
    """(N,) hand size in m: the longer side of the 3D joints' box (at least 2 cm)."""
    ext = x3[:, :21].max(axis=1) - x3[:, :21].min(axis=1)  # (N, 3)
    return np.maximum(ext.max(axis=1), 0.02)


class HandSmoother:
    """Smooth hands frame by frame, keyed by track id (hands without a track id pass through)."""

    def __init__(self, config: OneEuroConfig | None = None) -> None:
        """Start with no track state."""
        self.cfg = config or OneEuroConfig()
        self.states: dict[int, _State] = {}

    def reset(self) -> None:
        """Forget every track."""
        self.states.clear()

    def __call__(self, hands: list[Hand], t: float) -> list[Hand]:
        """Return smoothed copies of `hands` (the inputs are not changed) at time `t` seconds."""
        out = list(hands)
        cont: list[int] = []  # indices of hands whose track has a recent state of a matching layout
        for i, h in enumerate(hands):
            if h.track_id is None:
                continue
            s = self.states.get(h.track_id)
            kp, x3 = _pack2d(h), _pack3d(h)
            if s is None or not (0.0 < t - s.t <= self.cfg.max_gap_s) or s.x3.shape != x3.shape:
                self.states[h.track_id] = _State(t, kp, np.zeros_like(kp), x3, np.zeros_like(x3))
                continue
            cont.append(i)
        if not cont:
            return out
        # group by dt so each group is one vectorised step (in practice all hands of a frame share dt
        # unless a track skipped frames)
        groups: dict[float, list[int]] = {}
        for i in cont:
            groups.setdefault(round(t - self.states[hands[i].track_id].t, 9), []).append(i)
        for dt, idx in groups.items():
            sts = [self.states[hands[i].track_id] for i in idx]
            kp = np.stack([_pack2d(hands[i]) for i in idx])  # (N, 23, 2)
            kp_prev, dkp_prev = np.stack([s.kp for s in sts]), np.stack([s.dkp for s in sts])
            kp_hat, dkp_hat = one_euro_step(kp, kp_prev, dkp_prev, dt, _size_2d(kp_prev), self.cfg, per="point")
            if len({s.x3.shape for s in sts}) == 1:
                x3 = np.stack([_pack3d(hands[i]) for i in idx])  # (N, 22+V, 3)
                x3_prev, dx3_prev = np.stack([s.x3 for s in sts]), np.stack([s.dx3 for s in sts])
                x3_hat, dx3_hat = one_euro_step(x3, x3_prev, dx3_prev, dt, _size_3d(x3_prev), self.cfg, per="hand")
            else:  # mixed vertex counts (only if some hands lack vertices): one hand at a time
                res = [one_euro_step(_pack3d(hands[i])[None], s.x3[None], s.dx3[None], dt, _size_3d(s.x3[None]),
                                     self.cfg, per="hand") for i, s in zip(idx, sts)]
                x3_hat = [r[0][0] for r in res]
                dx3_hat = [r[1][0] for r in res]
            for n, (i, s) in enumerate(zip(idx, sts)):
                s.t, s.kp, s.dkp, s.x3, s.dx3 = t, kp_hat[n], dkp_hat[n], x3_hat[n], dx3_hat[n]
                out[i] = _unpack(hands[i], kp_hat[n], x3_hat[n])
        return out

    def drop(self, keep_ids: set[int]) -> None:
        """Forget tracks not in `keep_ids` (call when the tracker drops tracks)."""
        for tid in [k for k in self.states if k not in keep_ids]:
            del self.states[tid]


def _unpack(h: Hand, kp: np.ndarray, x3: np.ndarray) -> Hand:
    """A copy of `h` with smoothed arrays, dtypes as in the input."""
    dt2 = np.asarray(h.keypoints_2d).dtype if np.asarray(h.keypoints_2d).dtype.kind == "f" else np.float64
    dt3 = np.asarray(h.joints_3d).dtype if np.asarray(h.joints_3d).dtype.kind == "f" else np.float64
    box = kp[21:23].reshape(4)
    box = np.concatenate([np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])])
    return replace(
        h,
        keypoints_2d=kp[:21].astype(dt2),
        bbox_xyxy=box.astype(dt2),
        joints_3d=x3[:21].astype(dt3),
        cam_t=x3[21].astype(dt3),
        vertices=None if h.vertices is None else x3[22:].astype(np.asarray(h.vertices).dtype),
    )
