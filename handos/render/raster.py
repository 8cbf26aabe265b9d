"""A small z-buffer triangle rasterizer in torch (CPU or CUDA), vectorised over faces and pixels.

Faces are binned by the size of their pixel bounding box; each bin tests all its faces against a
square of candidate pixels at once, and a `scatter_reduce(amin)` on depth resolves visibility.
Pixel (row i, column j) has its centre at image coordinates (u, v) = (j, i), like OpenCV drawing.
Depth is perspective-correct camera z (metres); background depth is +inf and face index -1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from handos.errors import InputError
from handos.geometry import intrinsics_of
from handos.geometry import project as _project

_MAX_CANDIDATES = 1 << 22  # pixel tests per chunk (bounds memory)


@dataclass
class Fragments:
    """Per-pixel rasterization result."""

    depth: torch.Tensor  # (H, W) camera z, +inf where empty
    face_index: torch.Tensor  # (H, W) long, -1 where empty
    bary: torch.Tensor  # (H, W, 3) perspective-correct barycentrics of the visible face (0 where empty)


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (..., 3) and intrinsic matrix K (3, 3) without skew -> pixel coordinates (..., 2)."""
    return _project(points, intrinsics_of(K.to(points)), min_depth=1e-9)


def _as_tensors(verts_cam, faces, K):
    verts = torch.as_tensor(verts_cam)
    if not torch.is_floating_point(verts):
        verts = verts.float()
    faces = torch.as_tensor(faces, device=verts.device).long()
    K = torch.as_tensor(K, device=verts.device).to(verts.dtype)
    if verts.dim() != 2 or verts.shape[-1] != 3 or faces.dim() != 2 or faces.shape[-1] != 3 or K.shape != (3, 3):
        raise InputError(f"rasterize needs verts (V, 3), faces (F, 3), K (3, 3); got {tuple(verts.shape)}, "
                         f"{tuple(faces.shape)}, {tuple(K.shape)}")
    return verts, faces, K


def _quantise(size: torch.Tensor) -> torch.Tensor:
    """Candidate window side for a bounding-box side: multiples of 4 up to 64 px, then powers of two."""
    size = size.clamp_min(1)
    small = (torch.ceil(size / 4) * 4).long()
    large = torch.pow(2, torch.ceil(torch.log2(size))).long()
    return torch.where(size <= 64, small, large)


def _edge(tri: torch.Tensor, a: int, b: int, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Edge function of the edge a->b of triangles tri (n, 3, 2) at pixels px (n, 1, sw), py (n, sh, 1)."""
    pa, pb = tri[:, a], tri[:, b]
    return ((pb[:, 0] - pa[:, 0])[:, None, None] * (py - pa[:, 1, None, None])
            - (pb[:, 1] - pa[:, 1])[:, None, None] * (px - pa[:, 0, None, None]))


def rasterize_fragments(verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, height: int, width: int,
                        near: float = 1e-3, cull_backfaces: bool = False) -> Fragments:
    """Rasterize a triangle mesh given in the camera frame (x right, y down, z forward) into H x W.

    cull_backfaces: skip faces seen from behind (only for closed meshes with outward winding).
    """
    verts, faces, K = _as_tensors(verts_cam, faces, K)
    dev = verts.device
    work = verts.float() if verts.dtype in (torch.float16, torch.bfloat16) else verts
    h, w = int(height), int(width)
    uv = project(work, K.to(work))  # (V, 2)
    tri = uv[faces]  # (F, 3, 2)
    z = work[faces, 2]  # (F, 3)
    x0 = torch.ceil(tri[..., 0].amin(1)).clamp(0, w - 1)
    x1 = torch.floor(tri[..., 0].amax(1)).clamp(-1, w - 1)
    y0 = torch.ceil(tri[..., 1].amin(1)).clamp(0, h - 1)
    y1 = torch.floor(tri[..., 1].amax(1)).clamp(-1, h - 1)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # (F,)
    ok = (z.amin(1) > near) & (x1 >= x0) & (y1 >= y0) & (area.abs() > 1e-12)
    ok &= (tri[..., 0].amax(1) < 4 * w + 1e4) & (tri[..., 0].amin(1) > -3 * w - 1e4)
    if cull_backfaces:  # outward-wound closed meshes: a face seen from behind is never visible
        ok &= area < 0  # outward normal toward the camera <=> negative signed area in (u, v)
    qw, qh = _quantise(x1 - x0 + 1), _quantise(y1 - y0 + 1)  # candidate window per face
    key = qw * 65536 + qh
    pix_all, depth_all, face_all = [], [], []
    for k in torch.unique(key[ok]).tolist():
        sw, sh = int(k) // 65536, int(k) % 65536
        fids = torch.nonzero(ok & (key == k)).squeeze(1)
        step = max(1, _MAX_CANDIDATES // (sw * sh))
        offs_x = torch.arange(sw, device=dev, dtype=work.dtype)
        offs_y = torch.arange(sh, device=dev, dtype=work.dtype)
        for start in range(0, len(fids), step):
            f = fids[start:start + step]
            px = x0[f, None, None] + offs_x[None, None, :]  # (n, 1, sw)
            py = y0[f, None, None] + offs_y[None, :, None]  # (n, sh, 1)
            inbox = (px <= x1[f, None, None]) & (py <= y1[f, None, None])  # (n, sh, sw)
            t = tri[f]  # (n, 3, 2)
            ar = area[f][:, None, None]

            b0, b1, b2 = (_edge(t, 1, 2, px, py) / ar, _edge(t, 2, 0, px, py) / ar,
                          _edge(t, 0, 1, px, py) / ar)  # screen barycentrics
            inside = inbox & (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
            zf = z[f]
            zinv = b0 / zf[:, 0, None, None] + b1 / zf[:, 1, None, None] + b2 / zf[:, 2, None, None]
            sel = torch.nonzero(inside, as_tuple=True)
            pix = (py.expand_as(inside)[sel] * w + px.expand_as(inside)[sel]).long()
            pix_all.append(pix)
            depth_all.append(1.0 / zinv[sel])
            face_all.append(f[sel[0]])
    depth = torch.full((h * w,), float("inf"), dtype=work.dtype, device=dev)
    face_index = torch.full((h * w,), -1, dtype=torch.long, device=dev)
    if pix_all:
        pix, dep, fid = torch.cat(pix_all), torch.cat(depth_all), torch.cat(face_all)
        depth.scatter_reduce_(0, pix, dep, reduce="amin")
        win = dep <= depth[pix]
        face_index.scatter_reduce_(0, pix[win], fid[win], reduce="amax")
    depth = depth.reshape(h, w)
    face_index = face_index.reshape(h, w)
    bary = _barycentrics(face_index, tri, z)
    return Fragments(depth.to(verts.dtype), face_index, bary.to(verts.dtype))


def _barycentrics(face_index: torch.Tensor, tri: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Perspective-correct barycentrics (H, W, 3) of each pixel's visible face."""
    h, w = face_index.shape
    out = torch.zeros(h, w, 3, dtype=tri.dtype, device=tri.device)
    rows, cols = torch.nonzero(face_index >= 0, as_tuple=True)
    if len(rows) == 0:
        return out
    f = face_index[rows, cols]
    t = tri[f]  # (n, 3, 2)
    p = torch.stack([cols, rows], -1).to(tri.dtype)  # (n, 2)
    e1, e2, d = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0], p - t[:, 0]
    den = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    b1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / den
    b2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / den
    b = torch.stack([1 - b1 - b2, b1, b2], -1).clamp_min(0)
    b = b / z[f]
    out[rows, cols] = b / b.sum(-1, keepdim=True)
    return out


def rasterize(verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, height: int, width: int,
              cull_backfaces: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth (H, W) camera z, +inf empty; face_index (H, W) long, -1 empty) of a camera-frame mesh."""
    frags = rasterize_fragments(verts_cam, faces, K, height, width, cull_backfaces=cull_backfaces)
    return frags.depth, frags.face_index
