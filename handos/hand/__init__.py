"""Our own articulated hand model (no MANO data), with an optional smplx.MANO backend.

    from handos.hand import HandModel, JOINT_NAMES, PARENTS
    hm = HandModel()
    out = hm(pose (B, 16, 3), shape (B, hm.NUM_SHAPE) | None, is_left (B,) | None)  # metres, wrist at 0

See `handos.hand.model` for the pose layout and `handos.hand.template` for the canonical frame.
"""
from handos.geometry import axis_angle_to_matrix, matrix_to_axis_angle
from handos.hand.model import NUM_SHAPE, HandModel, HandOutput, mirror_pose, mirror_vertices
from handos.hand.skeleton import BONES, FINGERS, JOINT_NAMES, PARENTS, POSE_JOINTS, TIPS, chirality

__all__ = ["BONES", "FINGERS", "HandModel", "HandOutput", "JOINT_NAMES", "NUM_SHAPE", "PARENTS", "POSE_JOINTS", "TIPS",
           "axis_angle_to_matrix", "chirality", "matrix_to_axis_angle", "mirror_pose", "mirror_vertices"]
