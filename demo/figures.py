"""Plotly 3D figures of hands in the camera frame (x right, y down, z forward; metres)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from demo.colors import MESH_COLORS, css, finger_colors, joint_colors
from handos.io.schema import Hand

LEGEND_BAND = 0.09  # the bottom fraction of the figure holding the legend, below the 3D scene
MIN_SPAN_M = 0.15  # each axis shows at least this much, so one flat hand still reads as 3D
# Looking from just behind and above the camera, so the hands appear as in the image but in depth.
DEFAULT_CAMERA = dict(up=dict(x=0, y=-1, z=0), eye=dict(x=-0.6, y=-0.6, z=-2.6), center=dict(x=0, y=0, z=0))


def finger_chains() -> list[list[int]]:
    """Joint indices of each finger's chain, wrist first: [[0,1,2,3,4], [0,5,..,8], ...]."""
    return [[0] + [1 + 4 * f + k for k in range(4)] for f in range(5)]


def hand_traces(hand: Hand, faces: np.ndarray | None, name: str) -> list[dict[str, Any]]:
    """Mesh3d (if the hand has vertices) + one line-and-marker trace per finger for one hand, as trace dicts."""
    traces: list[dict[str, Any]] = []
    joints = np.asarray(hand.joints_3d, dtype=np.float64)  # (21, 3)
    if hand.vertices is not None and faces is not None and len(faces):
        v = np.asarray(hand.vertices, dtype=np.float32)  # (V, 3)
        f = np.asarray(faces, dtype=np.int32)  # (F, 3)
        traces.append(dict(
            type="mesh3d", x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2],
            color=css(MESH_COLORS.get(hand.handedness, MESH_COLORS["right"])),
            opacity=0.55, flatshading=False, name=f"{name} mesh", legendgroup=name, showlegend=True,
            lighting=dict(ambient=0.55, diffuse=0.8, specular=0.15, roughness=0.6),
            lightposition=dict(x=0, y=-1000, z=-1000), hoverinfo="skip",
        ))
    colors, jcolors = finger_colors(), joint_colors()
    for f_idx, chain in enumerate(finger_chains()):
        p = joints[chain]  # (5, 3)
        traces.append(dict(
            type="scatter3d", x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="lines+markers",
            line=dict(color=css(colors[f_idx]), width=7),
            marker=dict(size=3.5, color=[css(jcolors[j]) for j in chain], line=dict(color="rgb(70,70,70)", width=1)),
            name=f"{name} joints", legendgroup=name, showlegend=False,
            hovertemplate=f"{name}<br>x %{{x:.3f}} m<br>y %{{y:.3f}} m<br>z %{{z:.3f}} m<extra></extra>",
        ))
    return traces


def scene_ranges(hands: Sequence[Hand], min_span: float = MIN_SPAN_M) -> list[list[float]] | None:
    """[x, y, z] axis ranges holding every joint and vertex with a margin, each at least `min_span` wide."""
    pts = [np.asarray(h.joints_3d, np.float64).reshape(-1, 3) for h in hands]
    pts += [np.asarray(h.vertices, np.float64).reshape(-1, 3) for h in hands if h.vertices is not None]
    if not pts:
        return None
    p = np.concatenate(pts)
    p = p[np.isfinite(p).all(1)]
    if not len(p):
        return None
    lo, hi = p.min(0), p.max(0)
    centre, span = (lo + hi) / 2, np.maximum((hi - lo) * 1.1, min_span)
    return [[float(c - s / 2), float(c + s / 2)] for c, s in zip(centre, span)]


EMPTY_BEFORE_RUN = "the 3D hands appear here after a run"
EMPTY_AFTER_RUN = "no hands found"


def hands_figure(hands: Sequence[Hand], faces_for, title: str | None = None, empty_text: str = EMPTY_AFTER_RUN) -> go.Figure:
    """All hands in one camera-frame scene: equal axis scale, y down, viewed from the camera.

    empty_text: what an empty figure says (EMPTY_BEFORE_RUN for the page's first view).
    """
    data = []
    for hand in hands:
        faces = faces_for(hand.handedness) if faces_for is not None else None
        data += hand_traces(hand, faces, f"#{hand.id} {hand.handedness}")
    ranges = scene_ranges(hands) or [None, None, None]
    visible = bool(hands)

    def axis(label: str, rng) -> dict[str, Any]:
        return dict(title=dict(text=label), showbackground=True, backgroundcolor="rgb(245,245,248)",
                    gridcolor="rgb(215,215,220)", zeroline=False, range=rng, visible=visible)

    layout = dict(
        scene=dict(xaxis=axis("x (m, right)", ranges[0]), yaxis=axis("y (m, down)", ranges[1]),
                   zaxis=axis("z (m, forward)", ranges[2]), aspectmode="data", camera=DEFAULT_CAMERA, dragmode="orbit",
                   domain=dict(x=[0, 1], y=[LEGEND_BAND, 1])),
        margin=dict(l=0, r=0, t=30 if title else 0, b=0), height=480,
        # in a band of its own under the scene, so it never covers an axis label (the top-left corner is
        # under gr.Plot's label, the top-right under the mode bar)
        legend=dict(orientation="h", x=0.5, xanchor="center", y=0.0, yanchor="bottom", bgcolor="rgba(255,255,255,0.6)"),
        xaxis=dict(visible=False), yaxis=dict(visible=False),  # no 2D axes behind an empty scene
        uirevision="hands",  # keep the user's rotation when the figure updates (e.g. the frame slider)
    )
    if title:
        layout["title"] = dict(text=title)
    if not hands and empty_text:
        layout["annotations"] = [dict(text=empty_text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                                      font=dict(size=18, color="gray"))]
    # The traces above use only valid, fixed attributes; skipping Plotly's validation makes this ~50x faster.
    return go.Figure(dict(data=data, layout=layout), _validate=False)
