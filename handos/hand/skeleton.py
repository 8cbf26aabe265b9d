"""The 21-joint hand skeleton (FreiHAND/MANO order) and the 16-rotation pose layout."""
from __future__ import annotations

import numpy as np
import torch

from handos.geometry import Array, xp_of
from handos.io.schema import BONES, JOINT_NAMES

FINGERS: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")
NUM_JOINTS = 21
NUM_POSE_JOINTS = 16  # wrist/global + 15 finger joints (the tips have no rotation)

# parent of each of the 21 joints (-1 for the wrist)
PARENTS: tuple[int, ...] = tuple([-1] + [0 if k == 0 else 1 + 4 * f + k - 1 for f in range(5) for k in range(4)])

# pose row p (0..15) -> joint index (0..20): row 0 = wrist/global, rows 1..15 = thumb1-3, index1-3,
# middle1-3, ring1-3, pinky1-3 (FreiHAND finger order, joints 1..3 of each finger, base -> tip).
POSE_JOINTS: tuple[int, ...] = tuple([0] + [1 + 4 * f + k for f in range(5) for k in range(3)])
TIPS: tuple[int, ...] = tuple(4 + 4 * f for f in range(5))

# depth of each joint in the tree: 0 wrist, 1 finger bases, ..., 4 tips
DEPTH: tuple[int, ...] = tuple([0] + [k + 1 for f in range(5) for k in range(4)])

# MANO's 16-joint order (wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3) as our joint indices
MANO_JOINTS: tuple[int, ...] = (0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3)



def chirality(joints: Array, soft: bool = False) -> Array:
    """(..., 21, 3) joints -> (...) handedness from det[middle1-wrist, index1-pinky1, thumb2-wrist]: <0 right, >0 left.

    Default: the sign (-1 right, +1 left). soft=True: the determinant divided by the three lengths, in [-1, 1].
    Numpy arrays or torch tensors (the result has the input's kind).
    """
    xp = xp_of(joints)
    a = joints[..., 9, :] - joints[..., 0, :]  # (..., 3)
    b = joints[..., 5, :] - joints[..., 17, :]
    c = joints[..., 2, :] - joints[..., 0, :]
    bxc = torch.linalg.cross(b, c) if isinstance(b, torch.Tensor) else np.cross(b, c)
    det = (a * bxc).sum(-1)  # (...,) det[a, b, c] as the triple product a . (b x c): no LU factorisation
    if not soft:
        return xp.sign(det)
    if isinstance(joints, torch.Tensor):
        return det / (a.norm(dim=-1) * b.norm(dim=-1) * c.norm(dim=-1)).clamp_min(1e-12)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) * np.linalg.norm(c, axis=-1)
    return det / np.maximum(norms, 1e-12)


__all__ = ["BONES", "DEPTH", "FINGERS", "JOINT_NAMES", "MANO_JOINTS", "NUM_JOINTS", "NUM_POSE_JOINTS",
           "PARENTS", "POSE_JOINTS", "TIPS", "chirality"]
