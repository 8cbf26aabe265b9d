"""The decode step's maths as first written (before the CPU speed-up), kept as a reference for the tests.

The decoder forward with torch's own nn.TransformerEncoderLayer calls and the ROI-frame helpers, the
template skinning with per-joint rotations blended per vertex, and the per-axis camera x, y refit in
float64. Slow but plain; the shipped code must agree with it to float rounding.
"""
from __future__ import annotations

import torch

from handos.geometry import rot2d
from handos.hand.skeleton import NUM_JOINTS, chirality
from handos.model.decoder import WORLD_UNIT_M, DecoderInput, DecoderOutput, HandOSDecoder, hierarchical_mask
from handos.model.geometry import from_roi_frame, landmark_roi, to_roi_frame

PALM = (0, 5, 9, 13, 17)
SEGMENTS = tuple(j for j in range(1, 21) if j % 4 != 0)
TIPS = (4, 8, 12, 16, 20)


def rotate_z(points: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate 3D points (N,K,3) about the camera's z axis by angle (N,) (the image-plane rotation)."""
    xy = torch.einsum("nij,nkj->nki", rot2d(angle), points[..., :2])
    return torch.cat([xy, points[..., 2:]], -1)


def decoder_forward(dec: HandOSDecoder, inp: DecoderInput) -> DecoderOutput:
    """HandOSDecoder.forward as first written: nn layers with a bool mask, einsum blends, rotate_z."""
    cfg = dec.config
    j2d, cam = inp.joints_2d, inp.camera
    n = j2d.shape[0]
    roi = landmark_roi(j2d)
    size, rot = roi[:, 2], roi[:, 4]
    focal = cam[:, :2].mean(-1)
    u = to_roi_frame(j2d, roi)
    z = (inp.joints_z - inp.joints_z[:, :1]) / size[:, None]
    ev = [u, z[..., None], inp.joint_conf[..., None]]
    inst = [torch.log(size / focal)[:, None] + 2.5]
    ray = torch.cat([(roi[:, :2] - cam[:, 2:]) / cam[:, :2], torch.ones_like(size)[:, None]], -1)
    ray = rotate_z(ray[:, None], -rot)[:, 0]
    inst += [ray[:, :2], inp.joint_conf.mean(-1, keepdim=True), u.flatten(1), z, inp.joint_conf]
    if cfg.use_world:
        world = inp.world if inp.world is not None else torch.zeros(n, NUM_JOINTS, 3)
        w = rotate_z(world - world[:, :1], -rot) / WORLD_UNIT_M
        ev.append(w)
        inst.append(w.flatten(1))
    x = dec.evidence(torch.cat(ev, -1)) + dec.joint_embed + dec.instance(torch.cat(inst, -1))[:, None]
    for layer in dec.layers_2d:
        x = layer(x)
    h2 = dec.head_2d(dec.norm_2d(x))
    u_ref = u + h2[..., :2]
    x = x + dec.refined_embed(u_ref)
    q = torch.einsum("vj,njd->nvd", dec.lifting, x) + dec.vertex_embed
    q = torch.cat([q[:, :-1] + dec.template_embed(dec.template[dec.coarse_idx] / WORLD_UNIT_M), q[:, -1:]], 1)
    t = torch.cat([x, q], 1)
    mask = hierarchical_mask(NUM_JOINTS, dec.coarse_idx.shape[0])
    for layer in dec.layers_3d:
        t = layer(t, src_mask=mask)
    t = dec.norm_3d(t)
    nj = NUM_JOINTS
    joints_aux = dec.head_joint3d(t[:, :nj]) * WORLD_UNIT_M
    joints_aux = joints_aux - joints_aux[:, :1]
    base = torch.einsum("vj,njd->nvd", dec.coarse_blend, joints_aux)
    coarse = base + dec.head_vertex(t[:, nj:-1]) * WORLD_UNIT_M
    verts = torch.einsum("vc,ncd->nvd", dec.upsample, coarse)
    joints = torch.einsum("jv,nvd->njd", dec.joint_regressor, verts)
    joints = torch.einsum("jk,nkd->njd", dec.joint_map, joints)
    root = joints[:, :1]
    verts, joints = rotate_z(verts - root, rot), rotate_z(joints - root, rot)
    joints_aux = rotate_z(joints_aux, rot)
    log_s = dec.head_camera(t[:, -1])[:, 0]
    tz = focal * cfg.depth_prior_m * torch.exp(log_s.clamp(-3, 3)) / size
    j2d_ref = from_roi_frame(u_ref, roi)
    txy = (j2d_ref[:, 0] - cam[:, 2:]) / cam[:, :2] * tz[:, None]
    cam_t = torch.cat([txy, tz[:, None]], -1)
    chi = chirality(joints, soft=True)
    return DecoderOutput(
        joints_2d=j2d_ref if cfg.refine_2d else j2d, joints_2d_score=torch.sigmoid(h2[..., 2] + 2.0), vertices=verts,
        joints_3d=joints_aux if cfg.joints_3d == "direct" else joints, cam_t=cam_t, is_left=chi > 0,
        handedness_score=0.5 + 0.5 * torch.tanh(cfg.chirality_gain * chi.abs()),
        aux={"joints_3d_aux": joints_aux, "joints_3d_mesh": joints, "coarse": coarse, "roi": roi, "u_ref": u_ref,
             "log_s": log_s})


def kabsch(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R (N,3,3), t (N,3) with dst ~ R src + t."""
    mu_s, mu_d = src.mean(0), dst.mean(1)
    h = torch.einsum("ki,nkj->nij", src - mu_s, dst - mu_d[:, None])
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = vt.transpose(1, 2) @ fix @ u.transpose(1, 2)
    return rot, mu_d - torch.einsum("nij,j->ni", rot, mu_s)


def align_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotation turning unit vectors a onto b."""
    v = torch.cross(a, b, dim=-1)
    c = (a * b).sum(-1).clamp(min=-1 + 1e-6)
    zero = torch.zeros_like(c)
    vx = torch.stack([torch.stack([zero, -v[..., 2], v[..., 1]], -1),
                      torch.stack([v[..., 2], zero, -v[..., 0]], -1),
                      torch.stack([-v[..., 1], v[..., 0], zero], -1)], -2)
    eye = torch.eye(3, dtype=a.dtype).expand(vx.shape)
    return eye + vx + vx @ vx / (1 + c)[..., None, None]


def skin_to_joints(joints: torch.Tensor, rest_vertices: torch.Tensor, rest_joints: torch.Tensor,
                   skin_weights: torch.Tensor, is_left: torch.Tensor) -> torch.Tensor:
    """Template (N,V,3) posed to joints (N,21,3): per-joint rotations and anchors, blended per vertex."""
    dtype = rest_vertices.dtype
    flip = torch.where(is_left, -1.0, 1.0).to(dtype)[:, None, None]
    mirror = torch.cat([flip, torch.ones_like(flip), torch.ones_like(flip)], -1)
    target = joints.to(dtype) * mirror
    n = target.shape[0]
    r0, t0 = kabsch(rest_joints[list(PALM)], target[:, list(PALM)])
    rot = r0[:, None].repeat(1, 21, 1, 1)
    anchor = torch.einsum("nij,kj->nki", r0, rest_joints) + t0[:, None]
    seg = torch.tensor(SEGMENTS)
    rest_dir = torch.nn.functional.normalize(rest_joints[seg + 1] - rest_joints[seg], dim=-1)
    rest_dir = torch.einsum("nij,sj->nsi", r0, rest_dir)
    pred_dir = torch.nn.functional.normalize(target[:, seg + 1] - target[:, seg], dim=-1)
    rot[:, seg] = align_rotation(rest_dir, pred_dir) @ r0[:, None]
    anchor[:, seg] = target[:, seg]
    tips = torch.tensor(TIPS)
    rot[:, tips] = rot[:, tips - 1]
    anchor[:, tips] = target[:, tips]
    offset = anchor - torch.einsum("njab,jb->nja", rot, rest_joints)
    bones = torch.cat([rot.reshape(n, 21, 9), offset], -1)
    blended = torch.einsum("vj,njk->nvk", skin_weights, bones)
    verts = torch.einsum("nvab,vb->nva", blended[..., :9].reshape(n, -1, 3, 3), rest_vertices) + blended[..., 9:]
    return verts * mirror


def fit_translation_xy(joints_rr: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor, camera: torch.Tensor,
                       prior_t: torch.Tensor) -> torch.Tensor:
    """Camera x, y (depth kept) so the joints reproject onto the keypoints: weighted mean per axis."""
    fx, fy, cx, cy = camera.unbind(-1)
    X, Y, Z = joints_rr.unbind(-1)
    depth = Z + prior_t[:, 2:3]
    w = weights.clamp(min=0) + 1e-9
    tx = (w * ((keypoints[..., 0] - cx[:, None]) * depth / fx[:, None] - X)).sum(1) / w.sum(1)
    ty = (w * ((keypoints[..., 1] - cy[:, None]) * depth / fy[:, None] - Y)).sum(1) / w.sum(1)
    return torch.stack([tx, ty, prior_t[:, 2]], -1)


def decode_step(dec: HandOSDecoder, template: tuple | None, inp: DecoderInput) -> tuple[torch.Tensor, ...]:
    """DecodeStep.forward as first written (camera refit in float64, skinned or decoder mesh)."""
    out = decoder_forward(dec, inp)
    cam_t = fit_translation_xy(out.joints_3d.double(), out.joints_2d.double(), out.joints_2d_score.double(),
                               inp.camera.double(), out.cam_t.double()).float()
    verts = out.vertices
    if template is not None:
        verts = skin_to_joints(out.joints_3d, *template, out.is_left)
    t = cam_t[:, None]
    return out.joints_2d, out.joints_2d_score, out.joints_3d + t, cam_t, verts + t, out.is_left, out.handedness_score
