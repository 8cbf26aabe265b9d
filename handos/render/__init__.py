"""Software rendering: a torch z-buffer rasterizer, mesh shading, and 2D overlays for hands."""
from handos.render.raster import Fragments, project, rasterize, rasterize_fragments
from handos.render.shading import render_mesh, vertex_normals

__all__ = ["Fragments", "project", "rasterize", "rasterize_fragments", "render_mesh", "vertex_normals"]
