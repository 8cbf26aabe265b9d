"""The HandOS interactive 2D-3D decoder (the paper's expansion, 2D layers, lifting, interactive layers and heads) on top of the frozen foundation.

Per hand (hands are the batch dimension, so no hand ever attends to another):
  evidence (2D joints, relative depth, confidence, world landmarks) in the ROI frame
  -> 21 joint queries (instance feature + joint embedding + evidence encoding)
  -> 2D layers (self-attention among the joints) -> refined 2D joints
  -> lifting: learnable (V'+1) x 21 matrix (initialised from skinning weights) -> V' vertex + 1 camera query
  -> interactive layers with the hierarchical mask (joints <-> vertices; camera reads both; nobody reads camera)
  -> heads: coarse vertices -> fixed upsampling -> full mesh; 3D joints = joint regressor @ mesh; camera t.
Everything is expressed in the ROI frame (translation/scale/in-plane-rotation free) and mapped back.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from handos.config import check_keys
from handos.errors import ConfigError, ModelError
from handos.hand.skeleton import NUM_JOINTS, PARENTS, chirality
from handos.model.geometry import landmark_roi, rotation_z
from handos.model.mesh import farthest_point_sampling, upsampling_matrix
from handos.weights import WEIGHTS_DIR

WORLD_UNIT_M = 0.1  # world landmarks and vertices are handled in units of 10 cm


@dataclass
class DecoderConfig:
    """Hyper-parameters of the decoder (saved next to the weights as decoder_config.json)."""

    d_model: int = 128
    n_heads: int = 4
    mlp_ratio: float = 2.0
    n_layers_2d: int = 2
    n_layers_3d: int = 4
    n_coarse: int = 195  # coarse vertex queries (farthest point sampling on the template)
    upsample_k: int = 4
    dropout: float = 0.0
    use_world: bool = True  # read the foundation's world landmarks as evidence
    refine_2d: bool = True  # report the refined 2D joints (False: report the foundation's, refine internally only)
    # output wrist = model wrist + a*(index1-wrist) + b*(pinky1-wrist) + c*(thumb1-wrist): moves our hand model's
    # wrist to where the real 3D sets put it (fitted on metacarpal lengths, see MODEL_CARD.md); zeros = model wrist
    wrist_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    depth_prior_m: float = 0.2  # tz = f * depth_prior_m * exp(head) / roi_size
    chirality_gain: float = 6.0  # handedness_score = 0.5 + 0.5 * tanh(gain * |chirality|)
    # which 3D joints are reported (inference only; training is the same): "mesh" = joint regressor on the
    # upsampled mesh (the coarse mesh blurs fingertips and shortens distal bones), "direct" = the joint
    # queries' own 3D head (the auxiliary joints); handedness always comes from the mesh joints
    joints_3d: str = "mesh"
    version: str = "handos-decoder-0.1"

    def __post_init__(self) -> None:
        """Reject unknown choices early."""
        if self.joints_3d not in ("mesh", "direct"):
            raise ConfigError(f"decoder config joints_3d must be 'mesh' or 'direct', got {self.joints_3d!r}")

    @staticmethod
    def from_dict(d: dict) -> DecoderConfig:
        """Config from a dict; unknown keys are an error."""
        check_keys(d, DecoderConfig, "decoder config keys")
        return DecoderConfig(**d)


@dataclass
class DecoderInput:
    """Per-hand evidence from the foundation (N hands over all images)."""

    joints_2d: torch.Tensor  # (N,21,2) px
    joints_z: torch.Tensor  # (N,21) relative depth, px units (like x)
    joint_conf: torch.Tensor  # (N,21) in [0,1]
    camera: torch.Tensor  # (N,4) [fx,fy,cx,cy] px
    world: torch.Tensor | None = None  # (N,21,3) m, hand-centred, camera-aligned axes
    roi: torch.Tensor | None = None  # (N,5) the foundation's ROI (informative; the decoder uses landmark_roi)
    # (N,5) landmark_roi(joints_2d) when the caller already has it (the foundation's next_roi: the same MediaPipe
    # rule, equal to float32 rounding); None: the decoder computes it
    landmark_roi: torch.Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> DecoderInput:
        """Copy onto a device/dtype."""
        return DecoderInput(**{f.name: (None if getattr(self, f.name) is None else
                                        getattr(self, f.name).to(device=device, dtype=dtype))
                               for f in fields(self)})

    def __len__(self) -> int:
        return self.joints_2d.shape[0]


@dataclass
class DecoderOutput:
    """Per-hand predictions."""

    joints_2d: torch.Tensor  # (N,21,2) px
    joints_2d_score: torch.Tensor  # (N,21)
    vertices: torch.Tensor  # (N,V,3) m root-relative, camera axes
    joints_3d: torch.Tensor  # (N,21,3) m root-relative
    cam_t: torch.Tensor  # (N,3) m, wrist in the camera frame
    is_left: torch.Tensor  # (N,) bool
    handedness_score: torch.Tensor  # (N,)
    aux: dict = field(default_factory=dict)  # training-only intermediates


def decoder_inputs_from_foundation(fout, cameras: torch.Tensor) -> DecoderInput:
    """DecoderInput from a FoundationOutput and per-hand cameras (N,4) [fx,fy,cx,cy]."""
    j2d = torch.as_tensor(fout.joints_2d, dtype=torch.float32)
    n = j2d.shape[0]
    cams = torch.as_tensor(cameras, dtype=torch.float32, device=j2d.device)
    if cams.shape != (n, 4):
        raise ModelError(f"cameras must be (N,4) [fx,fy,cx,cy] per hand, got {tuple(cams.shape)} for {n} hands")
    presence = getattr(fout, "presence", None)
    if presence is None:
        presence = torch.ones(n, device=j2d.device)
    conf = torch.as_tensor(presence, dtype=torch.float32, device=j2d.device).reshape(n, 1).expand(n, NUM_JOINTS)
    world = getattr(fout, "world", None)
    roi = getattr(fout, "roi", None)
    next_roi = getattr(fout, "next_roi", None)  # MediaPipe's ROI of these landmarks: the decoder's landmark_roi
    return DecoderInput(
        joints_2d=j2d, joints_z=torch.as_tensor(fout.joints_z, dtype=torch.float32, device=j2d.device),
        joint_conf=conf.contiguous(), camera=cams,
        world=None if world is None else torch.as_tensor(world, dtype=torch.float32, device=j2d.device),
        roi=None if roi is None else torch.as_tensor(roi, dtype=torch.float32, device=j2d.device),
        landmark_roi=None if next_roi is None else torch.as_tensor(next_roi, dtype=torch.float32, device=j2d.device))


# buffers that describe the mesh (from the hand model at training time; saved with the weights)
MESH_BUFFERS = ("template", "coarse_idx", "coarse_skin", "coarse_blend", "upsample", "joint_regressor",
                "faces_right", "faces_left")


def bone_midpoint_matrix() -> torch.Tensor:
    """(21,21) A with row j = 0.5 * joint j + 0.5 * mean of j's children (tips: the tip itself)."""
    a = torch.zeros(NUM_JOINTS, NUM_JOINTS)
    for j in range(NUM_JOINTS):
        kids = [k for k, p in enumerate(PARENTS) if p == j]
        a[j, j] = 0.5 if kids else 1.0
        for k in kids:
            a[j, k] = 0.5 / len(kids)
    return a


def wrist_joint_map(shift: tuple[float, float, float]) -> torch.Tensor:
    """(21,21) linear map from the hand model's joints to the output joints (only the wrist row moves)."""
    m = torch.eye(NUM_JOINTS)
    a, b, c = (float(x) for x in shift)
    m[0, 0] = 1.0 - a - b - c
    m[0, 5], m[0, 17], m[0, 1] = a, b, c
    return m


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Two-layer GELU MLP."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


def transformer_layer(cfg: DecoderConfig) -> nn.TransformerEncoderLayer:
    """A pre-norm self-attention block's weights (run by `pre_norm_block`)."""
    return nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, int(cfg.d_model * cfg.mlp_ratio), cfg.dropout,
                                      activation="gelu", batch_first=True, norm_first=True)


def pre_norm_block(layer: nn.TransformerEncoderLayer, x: torch.Tensor,
                   attn_bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (N,T,d) through `layer` (norm_first, gelu, batch_first) with an additive attention mask (T,T) or None.

    The same maths as layer(x, src_mask=...) (dropout included), written out so one code path serves training
    and inference: the module's fused fast path turns a mask into a slow masked softmax on the CPU.
    """
    attn = layer.self_attn
    qkv = F.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias)  # (N,T,3d)
    q, k, v = qkv.unflatten(-1, (3, attn.num_heads, attn.head_dim)).permute(2, 0, 3, 1, 4).unbind()  # (N,h,T,d/h)
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=attn.dropout if layer.training else 0.0)
    a = a.transpose(1, 2).flatten(2)  # (N,T,d) heads side by side
    x = x + layer.dropout1(attn.out_proj(a))
    return x + layer.dropout2(layer.linear2(layer.dropout(F.gelu(layer.linear1(layer.norm2(x))))))


def hierarchical_mask(n_joints: int, n_verts: int) -> torch.Tensor:
    """(T,T) bool attention mask, True = blocked: joints<->vertices free; camera reads all; nobody reads camera."""
    t = n_joints + n_verts + 1
    mask = torch.zeros(t, t, dtype=torch.bool)
    mask[:-1, -1] = True  # no joint/vertex query reads the camera query
    return mask


def attention_bias(mask: torch.Tensor) -> torch.Tensor:
    """(T,T) additive attention mask from a bool one (True = blocked): 0 where allowed, -inf where blocked."""
    return torch.zeros(mask.shape).masked_fill(mask, float("-inf"))


class HandOSDecoder(nn.Module):
    """Interactive 2D-3D decoder: foundation evidence -> refined 2D joints, mesh, camera translation."""

    def __init__(self, config: DecoderConfig | None = None, hand_model: nn.Module | None = None,
                 mesh_state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        cfg = self.config = config or DecoderConfig()
        d = cfg.d_model
        if mesh_state is not None:  # weights are self-contained: the mesh they were trained on
            for name in MESH_BUFFERS:
                self.register_buffer(name, mesh_state[name].clone())
        else:
            if hand_model is None:
                from handos.hand import HandModel

                hand_model = HandModel()
            self._init_mesh_buffers(hand_model, cfg)
        n_c = self.num_coarse = int(self.coarse_idx.shape[0])
        n_ev = 4 + (3 if cfg.use_world else 0)
        self.evidence = mlp(n_ev, d, d)  # per joint: u, v, z, conf (+ world xyz)
        self.instance = mlp(4 + 4 * NUM_JOINTS + (3 * NUM_JOINTS if cfg.use_world else 0), d, d)  # whole-hand summary
        self.joint_embed = nn.Parameter(torch.randn(NUM_JOINTS, d) * 0.02)
        self.layers_2d = nn.ModuleList(transformer_layer(cfg) for _ in range(cfg.n_layers_2d))
        self.norm_2d = nn.LayerNorm(d)
        self.head_2d = nn.Linear(d, 3)  # du, dv (ROI units), score logit
        self.refined_embed = nn.Linear(2, d)
        skin = self.coarse_skin / self.coarse_skin.sum(-1, keepdim=True).clamp_min(1e-8)  # (V',21)
        self.lifting = nn.Parameter(torch.cat([skin, torch.full((1, NUM_JOINTS), 1.0 / NUM_JOINTS)], 0))
        self.vertex_embed = nn.Parameter(torch.randn(n_c + 1, d) * 0.02)
        self.template_embed = nn.Linear(3, d)
        self.layers_3d = nn.ModuleList(transformer_layer(cfg) for _ in range(cfg.n_layers_3d))
        self.register_buffer("attn_bias", attention_bias(hierarchical_mask(NUM_JOINTS, n_c)), persistent=False)
        self.register_buffer("joint_map", wrist_joint_map(cfg.wrist_shift), persistent=False)
        self.norm_3d = nn.LayerNorm(d)
        self.head_vertex = nn.Linear(d, 3)
        self.head_joint3d = nn.Linear(d, 3)  # auxiliary (training only)
        self.head_camera = nn.Linear(d, 1)
        for head in (self.head_2d, self.head_vertex, self.head_joint3d, self.head_camera):
            nn.init.zeros_(head.bias)
            nn.init.normal_(head.weight, std=1e-3)

    def _init_mesh_buffers(self, hand_model: nn.Module, cfg: DecoderConfig) -> None:
        """Template, coarse set, upsampling, regressor and faces taken from the hand model."""
        with torch.no_grad():
            nv = int(hand_model.skin_weights.shape[0])
            pose = torch.zeros(1, 16, 3)
            out = hand_model(pose, None, None)
            template = out.vertices[0].float() - out.joints[0, :1].float()  # (V,3) right hand, root at origin
            skin = torch.as_tensor(hand_model.skin_weights, dtype=torch.float32)  # (V,21)
            idx = farthest_point_sampling(template, cfg.n_coarse)
            up = upsampling_matrix(template, skin, idx, cfg.upsample_k)  # (V,V')
            reg = torch.as_tensor(hand_model.joint_regressor, dtype=torch.float32)  # (21,V)
        faces = torch.as_tensor(np.ascontiguousarray(hand_model.faces_for(False)), dtype=torch.long)
        faces_l = torch.as_tensor(np.ascontiguousarray(hand_model.faces_for(True)), dtype=torch.long)
        assert template.shape[0] == nv
        self.register_buffer("template", template)
        self.register_buffer("coarse_idx", idx)
        self.register_buffer("coarse_skin", skin[idx])
        blend = skin[idx] @ bone_midpoint_matrix()  # a vertex skinned to joint j sits along j's bone(s)
        self.register_buffer("coarse_blend", blend / blend.sum(-1, keepdim=True).clamp_min(1e-8))
        self.register_buffer("upsample", up)
        self.register_buffer("joint_regressor", reg)
        self.register_buffer("faces_right", faces)
        self.register_buffer("faces_left", faces_l)

    @property
    def num_vertices(self) -> int:
        """Vertices of the full mesh."""
        return int(self.upsample.shape[0])

    def faces_for(self, is_left: bool) -> np.ndarray:
        """(F,3) int64 triangle indices for a right (False) or left (True) predicted mesh."""
        return (self.faces_left if bool(is_left) else self.faces_right).cpu().numpy()

    def forward(self, inp: DecoderInput) -> DecoderOutput:
        """Decode N hands; see DecoderOutput for shapes."""
        evidence, instance, u, roi, rot = self.encode(inp)
        return self.decode(inp, roi, rot, u, *self.trunk(evidence, instance, u))

    def encode(self, inp: DecoderInput) -> tuple[torch.Tensor, ...]:
        """The evidence in each hand's ROI frame (geometry, no weights) -> (evidence (N,21,E) per joint,
        instance (N,1,I) whole-hand summary, u (N,21,2) joints in the ROI frame, roi (N,5), rot (N,3,3))."""
        cfg = self.config
        j2d, cam = inp.joints_2d, inp.camera.unsqueeze(1)  # (N,21,2) px, (N,1,4)
        nj = NUM_JOINTS
        # (N,5) square ROI from the landmarks themselves (the caller's when given: the foundation's next_roi)
        roi = (landmark_roi(j2d) if inp.landmark_roi is None else inp.landmark_roi).detach()
        box = roi.unsqueeze(1)
        centre, size = box[..., :2], box[..., 2:3]  # (N,1,2) px, (N,1,1) px
        rot = rotation_z(roi[..., 4])  # (N,3,3) ROI frame -> camera axes; points (row vectors) @ rot: into the ROI frame
        r2 = rot[..., :2, :2]  # (N,2,2) the same in the image plane
        f2, pp = cam[..., :2], cam[..., 2:]  # (N,1,2) focal lengths, principal point
        focal = f2.mean(-1, keepdim=True)  # (N,1,1)
        u = (j2d - centre) @ r2 / size  # (N,21,2) ROI frame
        z = (inp.joints_z - inp.joints_z.narrow(1, 0, 1)).unsqueeze(-1) / size  # (N,21,1) relative depth
        conf = inp.joint_conf.unsqueeze(-1)  # (N,21,1)
        ray = (centre - pp) / f2 @ r2  # (N,1,2) viewing direction (x, y; z = 1) in the ROI frame
        # per joint evidence (N,21,.) and the whole hand's summary (N,1,.)
        ev = [u, z, conf]
        inst = [torch.log(size / focal) + 2.5, ray, conf.mean(1, keepdim=True), u.flatten(1).unsqueeze(1), z.mT, conf.mT]
        if cfg.use_world:
            world = inp.world if inp.world is not None else j2d.new_zeros(j2d.shape[0], nj, 3)
            w = (world - world.narrow(1, 0, 1)) @ rot / WORLD_UNIT_M  # (N,21,3) ROI frame
            ev.append(w)
            inst.append(w.flatten(1).unsqueeze(1))
        return torch.cat(ev, -1), torch.cat(inst, -1), u, roi, rot

    def trunk(self, evidence: torch.Tensor, instance: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The network: `encode`'s evidence (N,21,E), instance (N,1,I), u (N,21,2) -> the heads' raw outputs
        (head_2d (N,21,3): du, dv, score logit; head_joint3d (N,21,3); head_vertex (N,V',3); head_camera (N,1,1)).
        `litert_decoder.trunk_tflite` writes the same as a TFLite graph."""
        nj = NUM_JOINTS
        x = self.evidence(evidence) + self.joint_embed + self.instance(instance)  # (N,21,d)
        for layer in self.layers_2d:
            x = pre_norm_block(layer, x)  # (N,21,d)
        h2 = self.head_2d(self.norm_2d(x))  # (N,21,3)
        x = x + self.refined_embed(u + h2[..., :2])
        # lifting: (V'+1) x 21 matrix over joint queries, plus per-query embeddings (the camera query has no template)
        t = torch.cat([x, self.lifting @ x + self.query_prior()], 1)  # (N,21+V'+1,d)
        for layer in self.layers_3d:
            t = pre_norm_block(layer, t, self.attn_bias)
        t_joint, t_vert, t_cam = self.norm_3d(t).split([nj, self.num_coarse, 1], 1)
        return h2, self.head_joint3d(t_joint), self.head_vertex(t_vert), self.head_camera(t_cam)

    def query_prior(self) -> torch.Tensor:
        """(V'+1, d) embeddings of the vertex queries (their template position) and the camera query."""
        return self.vertex_embed + F.pad(self.template_embed(self.template[self.coarse_idx] / WORLD_UNIT_M), (0, 0, 0, 1))

    def decode(self, inp: DecoderInput, roi: torch.Tensor, rot: torch.Tensor, u: torch.Tensor, head_2d: torch.Tensor,
               head_joint3d: torch.Tensor, head_vertex: torch.Tensor, head_camera: torch.Tensor) -> DecoderOutput:
        """`trunk`'s heads -> DecoderOutput, in the frame of `encode`'s roi (N,5), rot (N,3,3), u (N,21,2)."""
        cfg = self.config
        cam = inp.camera.unsqueeze(1)  # (N,1,4)
        box = roi.unsqueeze(1)
        centre, size = box[..., :2], box[..., 2:3]  # (N,1,2) px, (N,1,1) px
        r2 = rot[..., :2, :2]
        f2, pp = cam[..., :2], cam[..., 2:]
        focal = f2.mean(-1, keepdim=True)
        u_ref = u + head_2d[..., :2]
        # 3D joints straight from the joint queries (auxiliary), then vertices = skinning-weighted
        # blend of those joints (the lifting prior) + a per-vertex offset read off the vertex queries
        joints_aux = head_joint3d * WORLD_UNIT_M  # (N,21,3) m, ROI frame
        joints_aux = joints_aux - joints_aux.narrow(1, 0, 1)
        coarse = self.coarse_blend @ joints_aux + head_vertex * WORLD_UNIT_M  # (N,V',3) m, ROI frame
        # the mesh's joints in the output convention: joint map @ regressor @ upsampling, one (21,V') matrix
        joints = (self.joint_map @ self.joint_regressor @ self.upsample) @ coarse  # (N,21,3)
        root = joints.narrow(1, 0, 1)
        # full mesh, root-relative, in camera axes; vertices last ((3,V') @ (V',V) is the fast way round for BLAS)
        verts = (rot @ (coarse.mT @ self.upsample.mT - root.mT)).mT.contiguous()  # (N,V,3)
        back = rot.mT  # (N,3,3) ROI frame -> camera axes for row vectors
        joints, joints_aux = (joints - root) @ back, joints_aux @ back
        # camera: depth from the ROI size and focal, wrist xy back-projected from the refined 2D wrist
        log_s = head_camera  # (N,1,1)
        tz = focal * cfg.depth_prior_m * torch.exp(log_s.clamp(-3, 3)) / size  # (N,1,1)
        j2d_ref = u_ref * size @ r2.mT + centre  # (N,21,2) px
        cam_t = torch.cat([(j2d_ref.narrow(1, 0, 1) - pp) / f2 * tz, tz], -1).flatten(1)  # (N,3)
        chi = chirality(joints, soft=True)
        return DecoderOutput(
            joints_2d=j2d_ref if cfg.refine_2d else inp.joints_2d, joints_2d_score=torch.sigmoid(head_2d[..., 2] + 2.0), vertices=verts,
            joints_3d=joints_aux if cfg.joints_3d == "direct" else joints, cam_t=cam_t, is_left=chi > 0,
            handedness_score=0.5 + 0.5 * torch.tanh(cfg.chirality_gain * chi.abs()),
            aux={"joints_3d_aux": joints_aux, "joints_3d_mesh": joints, "coarse": coarse, "roi": roi, "u_ref": u_ref,
                 "log_s": log_s.flatten()})


def save_decoder(model: HandOSDecoder, path: str | Path) -> Path:
    """Write weights (safetensors) + decoder_config.json next to them; returns the weights path."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "decoder.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"version": model.config.version})
    path.with_name(path.stem + "_config.json").write_text(json.dumps(asdict(model.config), indent=1))
    return path


def load_decoder(path: str | Path | None = None, device: str | torch.device = "cpu",
                 hand_model: nn.Module | None = None) -> HandOSDecoder:
    """Load a decoder from a .safetensors file or a folder (default: handos/weights/decoder.safetensors)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS_DIR / "decoder.safetensors"
    if path.is_dir():
        path = path / "decoder.safetensors"
    cfg_path = path.with_name(path.stem + "_config.json")
    if not path.exists() or not cfg_path.exists():
        raise ModelError(f"decoder weights not found at {path} (+ {cfg_path.name}); train them with "
                         "`python -m handos train` or pass the folder that holds them")
    cfg = DecoderConfig.from_dict(json.loads(cfg_path.read_text()))
    state = load_file(str(path))
    has_mesh = all(k in state for k in MESH_BUFFERS)
    try:
        model = HandOSDecoder(cfg, hand_model, mesh_state=state if has_mesh and hand_model is None else None)
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ModelError(f"decoder weights at {path} do not fit this code or hand model ({str(err).splitlines()[0]}); "
                         "re-train them") from None
    if missing or unexpected:
        raise ModelError(f"decoder weights at {path} do not match the code (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); re-train or update handos")
    return model.to(device).eval()
