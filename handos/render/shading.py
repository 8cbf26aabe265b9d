"""Mesh shading and compositing on top of the rasterizer: smooth Lambert + Blinn-Phong, alpha blend."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from handos.errors import InputError
from handos.render.raster import rasterize_fragments


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (V, 3) of a mesh (V, 3) / (F, 3), following the face winding."""
    tri = verts[faces]  # (F, 3, 3)
    fn = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    vn = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return vn / vn.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def shade(frag_normals: torch.Tensor, points: torch.Tensor, albedo: torch.Tensor, ambient: float = 0.32,
          specular: float = 0.18, shininess: float = 24.0) -> torch.Tensor:
    """Per-pixel colour (N, 3) in 0..1 from normals (N, 3), camera-frame points (N, 3), albedo (N, 3)."""
    view = -points / points.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = frag_normals / frag_normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = torch.where((n * view).sum(-1, keepdim=True) < 0, -n, n)  # two-sided
    key = torch.tensor([-0.35, -0.55, -1.0], dtype=n.dtype, device=n.device)
    key = key / key.norm()
    fill = torch.tensor([0.6, 0.2, -1.0], dtype=n.dtype, device=n.device)
    fill = fill / fill.norm()
    diff = 0.62 * (n @ key).clamp_min(0) + 0.22 * (n @ fill).clamp_min(0)
    half = key[None] + view
    half = half / half.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    spec = specular * ((n * half).sum(-1).clamp_min(0) ** shininess)
    return (albedo * (ambient + diff)[:, None] + spec[:, None]).clamp(0, 1)


def render_mesh(image: np.ndarray | torch.Tensor | None, meshes: Sequence[tuple], K, alpha: float = 0.8,
                height: int | None = None, width: int | None = None,
                background: tuple[int, int, int] = (255, 255, 255), cull_backfaces: bool = False) -> np.ndarray:
    """Draw camera-frame meshes [(verts (V,3), faces (F,3), rgb)] over `image` (H,W,3 uint8) -> uint8 image.

    With image None, draws on a `background` canvas of `height` x `width`. `alpha` is the mesh opacity.
    cull_backfaces: faster, for closed outward-wound meshes only (e.g. the hand model's `faces_for`).
    """
    if image is None:
        if height is None or width is None:
            raise InputError("render_mesh needs an image or height and width")
        base = np.empty((int(height), int(width), 3), dtype=np.uint8)
        base[:] = np.asarray(background, dtype=np.uint8)
    else:
        base = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if base.ndim != 3 or base.shape[2] != 3:
            raise InputError(f"render_mesh needs an (H, W, 3) image, got {base.shape}")
        base = base.astype(np.uint8)
    h, w = base.shape[:2]
    if not meshes:
        return base.copy()
    vs, fs, cols, off = [], [], [], 0
    for item in meshes:
        verts, faces, rgb = item[0], item[1], item[2]
        v = torch.as_tensor(verts).float()
        f = torch.as_tensor(faces, device=v.device).long()
        vs.append(v)
        fs.append(f + off)
        c = torch.as_tensor(np.asarray(rgb, dtype=np.float32) / 255.0, device=v.device)
        cols.append(c.expand(len(v), 3) if c.dim() == 1 else c)
        off += len(v)
    dev = vs[0].device
    verts = torch.cat([v.to(dev) for v in vs])
    faces = torch.cat([f.to(dev) for f in fs])
    colors = torch.cat([c.to(dev) for c in cols])
    Kt = torch.as_tensor(np.asarray(K, dtype=np.float32) if not isinstance(K, torch.Tensor) else K).float().to(dev)
    frags = rasterize_fragments(verts, faces, Kt, h, w, cull_backfaces=cull_backfaces)
    mask = frags.face_index >= 0
    out = base.copy()
    if not bool(mask.any()):
        return out
    f = frags.face_index[mask]  # (N,)
    b = frags.bary[mask]  # (N, 3)
    idx = faces[f]  # (N, 3)
    normals = vertex_normals(verts, faces)
    n = (normals[idx] * b[..., None]).sum(1)
    p = (verts[idx] * b[..., None]).sum(1)
    albedo = (colors[idx] * b[..., None]).sum(1)
    rgb = shade(n, p, albedo).cpu().numpy() * 255.0
    m = mask.cpu().numpy()
    out[m] = np.clip(out[m].astype(np.float32) * (1 - alpha) + rgb * alpha + 0.5, 0, 255).astype(np.uint8)
    return out
