"""The decoder: shapes, the hierarchical mask, per-hand independence, ROI invariances, handedness, I/O."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from handos.errors import ConfigError
from handos.geometry import rot2d
from handos.hand.skeleton import chirality
from handos.model.decoder import (
    DecoderConfig,
    DecoderInput,
    HandOSDecoder,
    attention_bias,
    decoder_inputs_from_foundation,
    hierarchical_mask,
    load_decoder,
    pre_norm_block,
    save_decoder,
    transformer_layer,
)
from handos.model.geometry import landmark_roi, rotation_z

TINY = DecoderConfig(d_model=32, n_heads=2, n_layers_2d=1, n_layers_3d=2, n_coarse=32)


@pytest.fixture(scope="session")
def hand_model():
    """The project's hand model."""
    from handos.hand import HandModel

    return HandModel()


@pytest.fixture(scope="session")
def decoder(hand_model):
    """A tiny randomly initialised decoder with non-trivial heads."""
    torch.manual_seed(0)
    dec = HandOSDecoder(TINY, hand_model).eval()
    with torch.no_grad():
        for head in (dec.head_2d, dec.head_vertex, dec.head_joint3d, dec.head_camera):
            head.weight.normal_(std=0.05)
    return dec


@pytest.fixture(scope="session")
def batch(hand_model):
    """A few synthetic hands as decoder input."""
    from handos.data.synthetic import SyntheticHands

    return SyntheticHands(hand_model).sample(5, torch.Generator().manual_seed(3))[0]


def test_forward_shapes(decoder, batch):
    out = decoder(batch)
    n, v = len(batch), decoder.num_vertices
    assert out.joints_2d.shape == (n, 21, 2) and out.joints_2d_score.shape == (n, 21)
    assert out.vertices.shape == (n, v, 3) and out.joints_3d.shape == (n, 21, 3) and out.cam_t.shape == (n, 3)
    assert out.is_left.dtype == torch.bool and out.handedness_score.shape == (n,)
    assert torch.isfinite(out.vertices).all() and (out.cam_t[:, 2] > 0).all()
    assert torch.allclose(out.joints_3d[:, 0], torch.zeros(n, 3), atol=1e-6)  # root-relative
    assert ((out.handedness_score >= 0.5) & (out.handedness_score <= 1)).all()


def test_empty_batch(decoder):
    inp = DecoderInput(torch.zeros(0, 21, 2), torch.zeros(0, 21), torch.zeros(0, 21), torch.zeros(0, 4),
                       torch.zeros(0, 21, 3))
    out = decoder(inp)
    assert out.vertices.shape == (0, decoder.num_vertices, 3) and out.is_left.shape == (0,)


def test_mask_is_hierarchical():
    m = hierarchical_mask(21, 10)  # True = blocked
    assert m.shape == (32, 32)
    assert m[:-1, -1].all()  # nobody reads the camera query
    assert not m[-1].any()  # the camera reads everything
    assert not m[:-1, :-1].any()  # joints <-> vertices freely


def test_camera_query_is_read_by_nobody(decoder, batch):
    out = decoder(batch)
    with torch.no_grad():
        saved = decoder.vertex_embed[-1].clone()
        decoder.vertex_embed[-1] += torch.randn(decoder.vertex_embed.shape[1]) * 2.0
        try:
            out2 = decoder(batch)
        finally:
            decoder.vertex_embed[-1].copy_(saved)
    assert torch.allclose(out.vertices, out2.vertices, atol=1e-5)  # mesh ignores the camera query
    assert not torch.allclose(out.cam_t, out2.cam_t)  # but the camera head uses it


def test_hands_do_not_attend_across_instances(decoder, batch):
    full = decoder(batch)
    one = decoder(DecoderInput(**{k: v[2:3] for k, v in vars(batch).items() if v is not None}))
    assert torch.allclose(full.vertices[2:3], one.vertices, atol=1e-5)
    assert torch.allclose(full.cam_t[2:3], one.cam_t, atol=1e-5)


def test_translation_and_scale_invariance(decoder, batch):
    out = decoder(batch)
    shift = torch.tensor([37.0, -21.0])
    moved = DecoderInput(batch.joints_2d + shift, batch.joints_z, batch.joint_conf,
                         batch.camera + torch.cat([torch.zeros(2), shift]), batch.world)
    o2 = decoder(moved)
    assert torch.allclose(out.vertices, o2.vertices, atol=1e-5)
    assert torch.allclose(out.cam_t, o2.cam_t, atol=1e-4)
    k = 2.5  # same scene, k times the resolution: 3D identical
    scaled = DecoderInput(batch.joints_2d * k, batch.joints_z * k, batch.joint_conf, batch.camera * k, batch.world)
    o3 = decoder(scaled)
    assert torch.allclose(out.vertices, o3.vertices, atol=1e-5)
    assert torch.allclose(out.cam_t, o3.cam_t, atol=1e-4)
    assert torch.allclose(out.joints_2d * k, o3.joints_2d, atol=1e-3)


def test_in_plane_rotation_equivariance(decoder, batch):
    out = decoder(batch)
    ang = torch.tensor(0.7)
    r = rot2d(ang)
    pp = batch.camera[:, None, 2:]
    j2d = (batch.joints_2d - pp) @ r.T + pp
    world = torch.cat([batch.world[..., :2] @ r.T, batch.world[..., 2:]], -1)
    o2 = decoder(DecoderInput(j2d, batch.joints_z, batch.joint_conf, batch.camera, world))
    expect = torch.cat([out.vertices[..., :2] @ r.T, out.vertices[..., 2:]], -1)
    assert torch.allclose(expect, o2.vertices, atol=1e-4)


def test_handedness_is_read_off_the_mesh(decoder, batch):
    out = decoder(batch)
    assert torch.equal(out.is_left, chirality(out.joints_3d, soft=True) > 0)
    assert decoder.faces_for(True).shape == decoder.faces_for(False).shape
    assert (decoder.faces_for(True) != decoder.faces_for(False)).any()


def test_landmark_roi_rotation():
    # an upright hand (fingers up) has rotation 0; turned 90 degrees clockwise it has +pi/2
    j = torch.zeros(1, 21, 2)
    j[0, :, 1] = -torch.linspace(0, 100, 21)
    j[0, :, 0] = torch.linspace(-10, 10, 21)
    roi = landmark_roi(j + 200)
    assert abs(float(roi[0, 4])) < 0.3 and float(roi[0, 2]) > 100
    turned = torch.stack([-j[..., 1], j[..., 0]], -1) + 200  # (x,y) -> (-y, x): fingers point right
    assert abs(float(landmark_roi(turned)[0, 4]) - math.pi / 2) < 0.3


def test_inputs_from_foundation(decoder, batch):
    n = len(batch)
    fout = SimpleNamespace(image_index=torch.zeros(n, dtype=torch.long), joints_2d=batch.joints_2d,
                           joints_z=batch.joints_z, presence=torch.full((n,), 0.9), world=batch.world,
                           roi=torch.zeros(n, 5))
    inp = decoder_inputs_from_foundation(fout, batch.camera)
    assert inp.joint_conf.shape == (n, 21) and float(inp.joint_conf[0, 0]) == pytest.approx(0.9)
    assert decoder(inp).vertices.shape[0] == n
    from handos.errors import ModelError

    with pytest.raises(ModelError):
        decoder_inputs_from_foundation(fout, batch.camera[:1])


def test_save_load_roundtrip(decoder, batch, hand_model, tmp_path):
    save_decoder(decoder, tmp_path)
    dec2 = load_decoder(tmp_path, hand_model=hand_model)
    assert torch.allclose(decoder(batch).vertices, dec2(batch).vertices)
    dec3 = load_decoder(tmp_path / "decoder.safetensors")  # self-contained: mesh buffers come from the file
    assert torch.allclose(decoder(batch).vertices, dec3(batch).vertices)
    assert (dec3.faces_for(True) == decoder.faces_for(True)).all()
    from handos.errors import ModelError

    with pytest.raises(ModelError):
        load_decoder(tmp_path / "missing")


def test_wrist_joint_map_moves_only_the_wrist():
    from handos.model.decoder import wrist_joint_map

    assert torch.equal(wrist_joint_map((0.0, 0.0, 0.0)), torch.eye(21))
    m = wrist_joint_map((0.2, 0.02, -0.5))
    assert torch.allclose(m.sum(1), torch.ones(21))  # affine: translations pass through
    assert torch.equal(m[1:], torch.eye(21)[1:])
    j = torch.randn(2, 21, 3)
    moved = torch.einsum("jk,nkd->njd", m, j)
    expect = j[:, 0] + 0.2 * (j[:, 5] - j[:, 0]) + 0.02 * (j[:, 17] - j[:, 0]) - 0.5 * (j[:, 1] - j[:, 0])
    assert torch.allclose(moved[:, 0], expect, atol=1e-6)


def test_refine_2d_switch(hand_model, batch):
    cfg = DecoderConfig(**{**TINY.__dict__, "refine_2d": False})
    dec = HandOSDecoder(cfg, hand_model).eval()
    assert torch.equal(dec(batch).joints_2d, batch.joints_2d)


@pytest.mark.parametrize("trunk,skinned", [("torch", True), ("litert", True), ("torch", False), ("litert", False)])
def test_traced_decode_step_equals_eager_for_any_number_of_hands(decoder, batch, hand_model, trunk, skinned):
    """The pipeline's decode step (decoder + camera refit + mesh) in inference is shape-generic and equals the eager
    torch step: traced whole (torch); on LiteRT, the whole step as two graphs with numpy's SVD between (skinned
    mesh: no trace at all) or the trunk between traces of encode and finish (the decoder's mesh): float rounding."""
    from handos.foundation.litert import litert_available
    from handos.model.pipeline import DecodeStep

    if trunk == "litert" and not litert_available():
        pytest.skip("the LiteRT decoder trunk needs ai-edge-litert (pip install -r requirements.txt)")
    template = (hand_model.rest_vertices.float(), hand_model.rest_joints.float(), hand_model.skin_weights.float())
    step = DecodeStep(decoder, template if skinned else None, fit_camera=True, trunk_runtime=trunk)
    assert step.trunk_runtime == trunk
    tol = {"atol": 1e-5} if trunk == "torch" else {"atol": 1e-4, "rtol": 1e-5}
    expected_traces = {("torch", True): {("forward", 2)}, ("torch", False): {("forward", 2)},
                       ("litert", True): set(), ("litert", False): {("encode", 2), ("finish", 2)}}[trunk, skinned]
    with torch.no_grad():
        two = DecoderInput(batch.joints_2d[:2], batch.joints_z[:2], batch.joint_conf[:2], batch.camera[:2],
                           batch.world[:2])
        first = step.infer(two)  # traces for 2 hands (where anything is traced)
        assert set(step.__dict__.get("_traced", {})) == expected_traces
        for n in (1, 3, 5, 2):  # 5 > TRACED_HANDS runs eagerly
            sub = DecoderInput(batch.joints_2d[:n], batch.joints_z[:n], batch.joint_conf[:n], batch.camera[:n],
                               batch.world[:n])
            traced = step.infer(sub)
            eager = step(sub.joints_2d, sub.joints_z, sub.joint_conf, sub.camera, sub.world)
            assert traced[2].shape == (n, 21, 3) and traced[4].shape == (n, decoder.num_vertices, 3)
            for a, b in zip(traced, eager):
                assert a.dtype == b.dtype and torch.allclose(a.float(), b.float(), **tol)
    assert len(first) == 7


def test_joints_3d_switch_reports_the_direct_head(hand_model, batch):
    """joints_3d = "direct" reports the joint queries' 3D head; the mesh joints and handedness are unchanged."""
    torch.manual_seed(0)
    mesh = HandOSDecoder(TINY, hand_model).eval()
    direct = HandOSDecoder(DecoderConfig(**{**TINY.__dict__, "joints_3d": "direct"}), hand_model).eval()
    direct.load_state_dict(mesh.state_dict())
    with torch.no_grad():
        a, b = mesh(batch), direct(batch)
    assert torch.equal(b.joints_3d, a.aux["joints_3d_aux"]) and torch.equal(b.aux["joints_3d_mesh"], a.joints_3d)
    assert torch.equal(a.is_left, b.is_left) and torch.equal(a.vertices, b.vertices)
    assert torch.allclose(b.joints_3d[:, 0], torch.zeros(len(batch), 3), atol=1e-6)
    with pytest.raises(ConfigError):
        DecoderConfig(joints_3d="vertices")


def assert_close_rel(new: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5, floor: float = 1e-6) -> None:
    """|new - ref| <= rel * max(max|ref|, floor) everywhere (float rounding, not a change of maths)."""
    assert new.shape == ref.shape
    new, ref = new.detach().double(), ref.detach().double()
    scale = float(ref.abs().max()) if ref.numel() else 1.0
    err = float((new - ref).abs().max()) if ref.numel() else 0.0
    assert err <= rel * max(scale, floor), (err, scale)


def test_pre_norm_block_is_the_torch_layer():
    """pre_norm_block runs an nn.TransformerEncoderLayer's maths: outputs and gradients, with and without a mask."""
    torch.manual_seed(0)
    layer = transformer_layer(TINY)
    x, grad_out = torch.randn(3, 12, TINY.d_model), torch.randn(3, 12, TINY.d_model)
    mask = hierarchical_mask(5, 6)
    for m, bias in ((None, None), (mask, attention_bias(mask))):
        layer.eval()
        with torch.no_grad():  # torch's fused fast path
            assert_close_rel(pre_norm_block(layer, x, bias), layer(x, src_mask=m))
        layer.train()  # torch's plain path (dropout 0): same outputs and the same gradients
        grads = []
        for ours in (True, False):
            xx = x.clone().requires_grad_()
            out = pre_norm_block(layer, xx, bias) if ours else layer(xx, src_mask=m)
            grads.append((out, *torch.autograd.grad((out * grad_out).sum(), [xx, *layer.parameters()])))
        for a, b in zip(*grads):
            assert_close_rel(a, b)


def test_attention_bias_blocks_what_the_mask_blocks():
    mask = hierarchical_mask(21, 10)
    bias = attention_bias(mask)
    assert torch.equal(torch.isinf(bias), mask) and (bias[~mask] == 0).all()


def test_rotation_z_is_rot2d_in_the_image_plane():
    angle = torch.tensor([0.0, 0.3, -2.0, 3.1])
    pts = torch.randn(4, 7, 3)
    from decoder_reference import rotate_z

    assert torch.allclose(pts @ rotation_z(angle).mT, rotate_z(pts, angle), atol=1e-6)


@pytest.mark.parametrize("joints_3d", ["mesh", "direct"])
def test_forward_matches_the_reference_maths(decoder, batch, joints_3d):
    """The decoder (one attention path, folded constants) gives the reference forward's numbers (torch's layers)."""
    from decoder_reference import decoder_forward

    dec = HandOSDecoder(DecoderConfig(**{**TINY.__dict__, "joints_3d": joints_3d}), mesh_state=decoder.state_dict())
    dec.load_state_dict(decoder.state_dict())
    dec.eval()
    with torch.no_grad():
        new, ref = dec(batch), decoder_forward(dec, batch)
    for name in ("joints_2d", "joints_2d_score", "vertices", "joints_3d", "cam_t", "handedness_score"):
        assert_close_rel(getattr(new, name), getattr(ref, name))
    assert torch.equal(new.is_left, ref.is_left)
    for name in ("joints_3d_aux", "joints_3d_mesh", "coarse", "roi", "u_ref", "log_s"):
        assert_close_rel(new.aux[name], ref.aux[name])


def test_shipped_decoder_matches_the_reference_maths(batch):
    from decoder_reference import decoder_forward

    dec = load_decoder()
    with torch.no_grad():
        new, ref = dec(batch), decoder_forward(dec, batch)
    for name in ("joints_2d", "joints_2d_score", "vertices", "joints_3d", "cam_t", "handedness_score"):
        assert_close_rel(getattr(new, name), getattr(ref, name))
    assert torch.equal(new.is_left, ref.is_left)


def test_gradients_match_the_reference_maths(decoder, batch):
    """Training sees the same loss gradients as through torch's layers (train mode, dropout 0)."""
    from decoder_reference import decoder_forward

    grads = []
    decoder.train()
    try:
        for run in (decoder, lambda inp: decoder_forward(decoder, inp)):
            out = run(batch)
            loss = out.vertices.square().sum() + out.joints_2d.square().mean() + out.cam_t.sum() + out.aux["log_s"].sum()
            grads.append(torch.autograd.grad(loss, [p for p in decoder.parameters() if p.requires_grad]))
    finally:
        decoder.eval()
    for a, b in zip(*grads):  # (the head biases' true gradients are 0: root-relative outputs; floor at 1)
        assert_close_rel(a, b, 1e-4, floor=1.0)


@pytest.mark.parametrize("skinned", [True, False])
def test_decode_step_matches_the_reference_maths(batch, hand_model, skinned):
    """The pipeline's decode step (traced at <= 4 hands, eager above) gives the reference maths' outputs."""
    from decoder_reference import decode_step

    from handos.model.pipeline import DecodeStep

    dec = load_decoder()
    template = (hand_model.rest_vertices.float(), hand_model.rest_joints.float(), hand_model.skin_weights.float())
    step = DecodeStep(dec, template if skinned else None, fit_camera=True)
    many = DecoderInput(*(torch.cat([v, v.flip(0)]) for v in (batch.joints_2d, batch.joints_z, batch.joint_conf,
                                                               batch.camera, batch.world)))
    with torch.no_grad():
        for n in (1, 2, len(many)):
            sub = DecoderInput(many.joints_2d[:n], many.joints_z[:n], many.joint_conf[:n], many.camera[:n],
                               many.world[:n])
            new, ref = step.infer(sub), decode_step(dec, template if skinned else None, sub)
            for a, b in zip(new, ref):
                if a.dtype == torch.bool:
                    assert torch.equal(a, b)
                else:
                    assert a.dtype == b.dtype
                    assert_close_rel(a, b)


def test_infer_runs_in_inference_mode_only_without_grad(decoder, batch, hand_model):
    """Without grad the step skips autograd's per-op bookkeeping (inference tensors out); with grad it is forward."""
    from handos.model.pipeline import DecodeStep

    template = (hand_model.rest_vertices.float(), hand_model.rest_joints.float(), hand_model.skin_weights.float())
    step = DecodeStep(decoder, template, fit_camera=True)
    with torch.no_grad():
        assert all(t.is_inference() for t in step.infer(batch))  # eager: 5 hands > TRACED_HANDS
        assert all(t.is_inference() for t in step.infer(DecoderInput(*(v[:1] for v in (
            batch.joints_2d, batch.joints_z, batch.joint_conf, batch.camera, batch.world)))))  # traced
    out = step.infer(batch)
    assert not out[4].is_inference() and out[4].requires_grad


def test_given_landmark_roi_is_used_and_matches_the_computed_one(decoder, batch, hand_model):
    """DecoderInput.landmark_roi (the foundation's next_roi in the pipeline) replaces the decoder's own
    landmark_roi: the same ROI gives the same outputs, traced or not; another ROI gives other outputs; and the
    foundation's next_roi is that ROI to float32 rounding."""
    from dataclasses import replace

    from handos.foundation.roi import roi_from_landmarks
    from handos.model.pipeline import DecodeStep

    roi = landmark_roi(batch.joints_2d)
    with torch.no_grad():
        plain, given = decoder(batch), decoder(replace(batch, landmark_roi=roi))
        assert torch.equal(plain.vertices, given.vertices) and torch.equal(plain.cam_t, given.cam_t)
        moved = decoder(replace(batch, landmark_roi=roi + torch.tensor([5.0, 0.0, 0.0, 0.0, 0.0])))
        assert not torch.allclose(moved.joints_2d, plain.joints_2d)
        template = (hand_model.rest_vertices.float(), hand_model.rest_joints.float(), hand_model.skin_weights.float())
        step = DecodeStep(decoder, template, fit_camera=True)
        one = DecoderInput(*(v[:1] for v in (batch.joints_2d, batch.joints_z, batch.joint_conf, batch.camera,
                                              batch.world)))
        for a, b in zip(step.infer(one), step.infer(replace(one, landmark_roi=landmark_roi(one.joints_2d)))):
            assert torch.equal(a, b)
    mp = torch.as_tensor(roi_from_landmarks(batch.joints_2d.double().numpy())).float()
    assert torch.allclose(mp[:, :4], roi[:, :4], atol=1e-3)
    assert torch.allclose(torch.remainder(mp[:, 4] - roi[:, 4] + math.pi, 2 * math.pi) - math.pi,
                          torch.zeros(len(roi)), atol=1e-5)


def test_chirality_is_the_determinant():
    """chirality's triple product equals the determinant of [middle1-wrist, index1-pinky1, thumb2-wrist]."""
    joints = torch.randn(64, 21, 3, dtype=torch.float64)
    a, b, c = joints[:, 9] - joints[:, 0], joints[:, 5] - joints[:, 17], joints[:, 2] - joints[:, 0]
    det = torch.linalg.det(torch.stack([a, b, c], -1))
    norms = a.norm(dim=-1) * b.norm(dim=-1) * c.norm(dim=-1)
    torch.testing.assert_close(chirality(joints, soft=True), det / norms)
    assert torch.equal(chirality(joints), torch.sign(det))
    assert (chirality(joints.numpy()) == torch.sign(det).numpy()).all()
