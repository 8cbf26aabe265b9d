"""SSD anchors of MediaPipe's palm detector (`SsdAnchorsCalculator`, options read off the 0.10.21 graph).

The options below are the `SsdAnchorsCalculatorOptions` of `PalmDetectionCpu` as serialized in the
`mediapipe==0.10.21` wheel: 192x192 input, 4 layers with strides 8, 16, 16, 16, min/max scale
0.1484375/0.75, anchor offset 0.5, one aspect ratio (1.0) plus the interpolated one (proto default 1.0),
fixed anchor size. That gives 24*24*2 + 12*12*6 = 2016 anchors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SsdAnchorOptions", "PALM_ANCHOR_OPTIONS", "ssd_anchors", "palm_anchors"]


@dataclass(frozen=True)
class SsdAnchorOptions:
    """`SsdAnchorsCalculatorOptions` fields that the palm graph uses (others at proto defaults)."""

    input_size_width: int = 192
    input_size_height: int = 192
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    num_layers: int = 4
    strides: tuple[int, ...] = (8, 16, 16, 16)
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0  # proto default; adds one anchor per layer
    reduce_boxes_in_lowest_layer: bool = False
    fixed_anchor_size: bool = True


PALM_ANCHOR_OPTIONS = SsdAnchorOptions()


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    """Linear scale of layer `index` of `count` (MediaPipe's CalculateScale)."""
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def ssd_anchors(opts: SsdAnchorOptions = PALM_ANCHOR_OPTIONS) -> torch.Tensor:
    """Anchors (A, 4) [x_center, y_center, w, h] in normalised input coordinates, MediaPipe's order."""
    out = []
    layer = 0
    n = len(opts.strides)
    while layer < opts.num_layers:
        sizes: list[tuple[float, float]] = []  # (w, h) per anchor at each location
        last = layer
        while last < n and opts.strides[last] == opts.strides[layer]:
            scale = _scale(opts.min_scale, opts.max_scale, last, n)
            if last == 0 and opts.reduce_boxes_in_lowest_layer:
                pairs = [(1.0, 0.1), (2.0, scale), (0.5, scale)]
            else:
                pairs = [(ar, scale) for ar in opts.aspect_ratios]
                if opts.interpolated_scale_aspect_ratio > 0.0:
                    nxt = 1.0 if last == n - 1 else _scale(opts.min_scale, opts.max_scale, last + 1, n)
                    pairs.append((opts.interpolated_scale_aspect_ratio, (scale * nxt) ** 0.5))
            for ar, sc in pairs:
                r = ar ** 0.5
                sizes.append((sc * r, sc / r))
            last += 1
        stride = opts.strides[layer]
        fh = -(-opts.input_size_height // stride)  # ceil
        fw = -(-opts.input_size_width // stride)
        ys, xs = torch.meshgrid(torch.arange(fh, dtype=torch.float64), torch.arange(fw, dtype=torch.float64),
                                indexing="ij")
        cx = (xs + opts.anchor_offset_x) / fw  # (fh, fw)
        cy = (ys + opts.anchor_offset_y) / fh
        k = len(sizes)
        wh = torch.tensor(sizes, dtype=torch.float64)  # (k, 2)
        if opts.fixed_anchor_size:
            wh = torch.ones_like(wh)
        c = torch.stack([cx, cy], -1)[:, :, None, :].expand(fh, fw, k, 2)  # (fh, fw, k, 2)
        out.append(torch.cat([c, wh.expand(fh, fw, k, 2)], -1).reshape(-1, 4))
        layer = last
    return torch.cat(out).to(torch.float32)


def palm_anchors(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The palm detector's 2016 anchors (2016, 4) [cx, cy, w, h] on `device`."""
    return ssd_anchors(PALM_ANCHOR_OPTIONS).to(device=device, dtype=dtype)
