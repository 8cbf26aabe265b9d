"""Software rendering: a torch z-buffer rasterizer, mesh shading, and 2D overlays for hands."""
from handos.render.overlay import BONE_COLORS, FINGER_COLORS, JOINT_COLORS, draw_hands, draw_skeleton
from handos.render.raster import Fragments, project, rasterize, rasterize_fragments
from handos.render.shading import render_mesh, vertex_normals

__all__ = ["BONE_COLORS", "FINGER_COLORS", "Fragments", "JOINT_COLORS", "draw_hands", "draw_skeleton", "project",
           "rasterize", "rasterize_fragments", "render_mesh", "vertex_normals"]
