"""Input/output: image loading and validation, cameras, the prediction schema, mesh export."""
from handos.io.camera import Camera, default_camera
from handos.io.images import load_image
from handos.io.schema import SCHEMA, Hand

__all__ = ["Camera", "default_camera", "load_image", "SCHEMA", "Hand"]
