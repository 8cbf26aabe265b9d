"""Optional backend: a user's own MANO model through `smplx.MANO`, with our pose layout and frame.

Set HANDOS_MANO_DIR (or pass mano_dir) to a folder with MANO_RIGHT.pkl (and MANO_LEFT.pkl; without
it left hands are mirrored right hands). handos never ships MANO files. The adapter:
- reorders our pose rows (FreiHAND finger order) into MANO's (index, middle, pinky, ring, thumb),
- rotates MANO's rest frame into ours (fingers -y, palm -z, thumb +x for the right hand; the same
  joint rule as our template) and conjugates the axis-angle vectors accordingly,
- appends the five fingertips from MANO's usual fingertip vertices, giving our 21-joint order.
"""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import torch

from handos.errors import ConfigError, ModelError
from handos.hand.skeleton import MANO_JOINTS, NUM_JOINTS, POSE_JOINTS, TIPS

# fingertip vertex ids of MANO's 778-vertex mesh (thumb, index, middle, ring, pinky), as in smplx
MANO_TIP_VERTICES: tuple[int, ...] = (744, 320, 443, 554, 671)
_MIRROR = np.diag([-1.0, 1.0, 1.0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def alignment(joints21: np.ndarray, left: bool) -> np.ndarray:
    """Rotation (3, 3) taking a rest hand's frame to our canonical one (rows = new axes, old coords)."""
    y = _unit(-(joints21[9] - joints21[0]))
    x = joints21[5] - joints21[17]
    x = _unit(x - y * np.dot(x, y))
    if left:
        x = -x  # a left hand's index lies on -x
    return np.stack([x, y, np.cross(x, y)])


class ManoBackend:
    """smplx.MANO right (and left) models behind our forward signature."""

    def __init__(self, mano_dir: str | None, dtype: torch.dtype = torch.float32, num_betas: int = 10,
                 tip_vertices: tuple[int, ...] = MANO_TIP_VERTICES) -> None:
        if not mano_dir:
            raise ConfigError("backend 'mano' needs your MANO files: set HANDOS_MANO_DIR to the folder with MANO_RIGHT.pkl")
        right = os.path.join(mano_dir, "MANO_RIGHT.pkl")
        if not os.path.isfile(right):
            raise ConfigError(f"no MANO_RIGHT.pkl in {mano_dir!r}; download MANO yourself and point HANDOS_MANO_DIR at it")
        try:
            import smplx
        except ImportError:  # pragma: no cover - smplx is a requirement
            raise ConfigError("backend 'mano' needs the smplx package (pip install smplx)") from None
        kw = dict(use_pca=False, flat_hand_mean=True, num_betas=num_betas, dtype=dtype, create_transl=False)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a shape-space notice
                self.models = {False: smplx.MANO(right, is_rhand=True, **kw)}
                left = os.path.join(mano_dir, "MANO_LEFT.pkl")
                if os.path.isfile(left):
                    self.models[True] = smplx.MANO(left, is_rhand=False, **kw)
        except Exception as err:  # noqa: BLE001 - third-party pickle loading, any failure means bad files
            raise ModelError(f"could not load MANO from {mano_dir!r}: {type(err).__name__}: {err}") from None
        self.num_betas = int(self.models[False].num_betas)
        self.tips = torch.tensor(tip_vertices, dtype=torch.long)
        self.dtype = dtype
        self.rot: dict[bool, torch.Tensor] = {}
        for is_left, m in self.models.items():
            j21 = self._joints21(m.v_template[None], m)[0].double().numpy()
            self.rot[is_left] = torch.tensor(alignment(j21, is_left), dtype=dtype)

    def _joints21(self, verts: torch.Tensor, model, j16: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V, 3) MANO vertices (+ its 16 joints, else regressed) -> (B, 21, 3) joints in our order."""
        if j16 is None:
            j16 = torch.einsum("jv,bvc->bjc", model.J_regressor.to(verts), verts)
        out = verts.new_zeros(verts.shape[0], NUM_JOINTS, 3)
        out[:, list(MANO_JOINTS)] = j16
        out[:, list(TIPS)] = verts[:, self.tips]
        return out

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Right-hand (rest vertices (V,3), faces (F,3), skin weights (V,21), regressor (21,V)) in our frame."""
        m = self.models[False]
        vt = m.v_template.double()
        j21 = self._joints21(vt[None], m)[0]
        rot = self.rot[False].double()
        verts = ((vt - j21[0]) @ rot.T).numpy()
        w16 = m.lbs_weights.double().numpy()
        weights = np.zeros((len(verts), NUM_JOINTS))
        weights[:, list(MANO_JOINTS)] = w16
        reg = np.zeros((NUM_JOINTS, len(verts)))
        reg[list(MANO_JOINTS)] = m.J_regressor.double().numpy()
        reg[list(TIPS), self.tips.numpy()] = 1.0
        return verts, np.asarray(m.faces, dtype=np.int64), weights, reg

    def forward(self, pose: torch.Tensor, shape: torch.Tensor | None, is_left: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Our pose (B, 16, 3) -> (vertices (B, V, 3), joints (B, 21, 3)) in our frame, handedness applied."""
        b = pose.shape[0]
        left = torch.zeros(b, dtype=torch.bool) if is_left is None else torch.as_tensor(is_left).reshape(b).bool().cpu()
        betas = pose.new_zeros(b, self.num_betas) if shape is None else shape.to(pose)
        row_of = {j: r for r, j in enumerate(POSE_JOINTS)}
        order = [row_of[j] for j in MANO_JOINTS]  # MANO joint i <- our pose row
        verts_out = joints_out = None
        for want_left in (False, True):
            sel = torch.nonzero(left == want_left).squeeze(1)
            if len(sel) == 0:
                continue
            use_left = want_left and True in self.models
            model = self.models[use_left]
            rot = self.rot[use_left].to(pose)
            p = pose[sel][:, order]  # (n, 16, 3) in MANO joint order
            if use_left:
                p = p * torch.tensor([1.0, -1.0, -1.0]).to(p)  # the mirrored rotations, in our left frame
            p = p @ rot  # axis-angle vectors into MANO coordinates (R^T v, row-wise)
            model = model.to(pose.device)
            out = model(betas=betas[sel], global_orient=p[:, 0], hand_pose=p[:, 1:].reshape(len(sel), 45))
            j21 = self._joints21(out.vertices, model, out.joints)
            root = j21[:, :1]
            v = (out.vertices - root) @ rot.T
            j = (j21 - root) @ rot.T
            if want_left and not use_left:
                mir = torch.tensor([-1.0, 1.0, 1.0]).to(v)
                v, j = v * mir, j * mir
            if verts_out is None:
                verts_out = v.new_zeros(b, v.shape[1], 3)
                joints_out = v.new_zeros(b, NUM_JOINTS, 3)
            verts_out[sel.to(v.device)] = v
            joints_out[sel.to(v.device)] = j
        return verts_out, joints_out
