"""The decoder's trunk as a TFLite graph on LiteRT (handos.model.litert_decoder): the same maths as torch's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from handos.foundation.litert import litert_available
from handos.model.decoder import DecoderConfig, DecoderInput, HandOSDecoder, load_decoder

if not litert_available():
    pytest.skip("the LiteRT decoder trunk needs ai-edge-litert (pip install -r requirements.txt)", allow_module_level=True)

from handos.model.litert_decoder import LiteRTDecoderTrunk, fold_norm, trunk_tflite  # noqa: E402


def _inputs(dec: HandOSDecoder, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """encode()'s outputs for n random but hand-like inputs."""
    g = torch.Generator().manual_seed(seed)
    j2d = 200 + 60 * torch.randn(n, 21, 2, generator=g)
    inp = DecoderInput(joints_2d=j2d, joints_z=5 * torch.randn(n, 21, generator=g), joint_conf=torch.rand(n, 21, generator=g),
                       camera=torch.tensor([[500.0, 500.0, 200.0, 180.0]]).expand(n, 4).contiguous(),
                       world=0.05 * torch.randn(n, 21, 3, generator=g))
    with torch.no_grad():
        return dec.encode(inp)


@pytest.fixture(scope="module")
def shipped():
    return load_decoder()


@pytest.fixture(scope="module")
def hand_model():
    from handos.hand import HandModel

    return HandModel()


def test_fold_norm_is_linear_of_norm():
    g = torch.Generator().manual_seed(1)
    norm = torch.nn.LayerNorm(16)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, generator=g))
        norm.bias.copy_(torch.randn(16, generator=g))
    w, b = torch.randn(5, 16, generator=g), torch.randn(5, generator=g)
    x = torch.randn(7, 16, generator=g)
    w2, b2 = fold_norm(norm, w, b)
    plain = torch.nn.functional.layer_norm(x, (16,), eps=norm.eps)
    assert torch.allclose(torch.nn.functional.linear(norm(x), w, b), torch.nn.functional.linear(plain, w2, b2), atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_shipped_trunk_on_litert_equals_torch(shipped, threads):
    """All four heads of the shipped decoder, LiteRT vs torch, to float rounding, one hand and three."""
    trunk = LiteRTDecoderTrunk(shipped, threads)
    for n in (1, 3):
        ev, inst, u, _, _ = _inputs(shipped, n, seed=n)
        with torch.no_grad():
            ref = shipped.trunk(ev, inst, u)
        got = trunk.run(ev.numpy(), inst.numpy(), u.numpy())
        assert [g.shape for g in got] == [tuple(r.shape) for r in ref]
        for r, g in zip(ref, got):
            assert np.allclose(g, r.numpy(), rtol=1e-4, atol=2e-5), np.abs(g - r.numpy()).max()


@pytest.mark.parametrize("use_world", [True, False])
def test_any_decoder_config_writes_a_matching_graph(hand_model, use_world):
    """The graph is written from the decoder it is given (other sizes, no world evidence, perturbed weights): no
    shipped file, so a trained or fine-tuned decoder runs on LiteRT as it is."""
    torch.manual_seed(3)
    cfg = DecoderConfig(d_model=32, n_heads=2, n_layers_2d=1, n_layers_3d=2, n_coarse=24, use_world=use_world)
    dec = HandOSDecoder(cfg, hand_model).eval()
    with torch.no_grad():
        for p in dec.parameters():  # away from the near-zero head init, so the comparison means something
            p.add_(0.05 * torch.randn_like(p))
    ev, inst, u, _, _ = _inputs(dec, 2)
    with torch.no_grad():
        ref = dec.trunk(ev, inst, u)
    got = LiteRTDecoderTrunk(dec).run(ev.numpy(), inst.numpy(), u.numpy())
    for r, g in zip(ref, got):
        assert np.abs(r.numpy()).max() > 1e-3
        assert np.allclose(g, r.numpy(), rtol=1e-4, atol=2e-5)
    assert trunk_tflite(dec)[4:8] == b"TFL3"


def test_load_runs_the_trunk_where_the_runtime_says(model):
    """runtime auto (the shared model) / litert on the CPU: the LiteRT trunk; torch: the traced torch step; outputs
    to float rounding."""
    import handos

    lit, tor = model, handos.load(runtime="torch")
    assert lit.decoder_runtime == "litert" and lit.decode_step().trunk_runtime == "litert"
    assert tor.decoder_runtime == "torch" and tor.decode_step().trunk_runtime == "torch"
    with torch.no_grad():
        inp = DecoderInput(*(t for t in _inputs_raw(3)))
        a, b = lit.decode_step().infer(inp), tor.decode_step().infer(inp)
    for x, y in zip(a, b):
        assert torch.allclose(x.float(), y.float(), rtol=1e-4, atol=1e-4)


def _inputs_raw(n: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(5)
    return (200 + 60 * torch.randn(n, 21, 2, generator=g), 5 * torch.randn(n, 21, generator=g),
            torch.rand(n, 21, generator=g), torch.tensor([[500.0, 500.0, 200.0, 180.0]]).expand(n, 4).contiguous(),
            0.05 * torch.randn(n, 21, 3, generator=g))


@pytest.mark.parametrize("variant", [{}, {"refine_2d": False, "joints_3d": "direct", "fit_camera": False},
                                     {"use_world": False, "joints_3d": "mesh"}])
def test_whole_step_on_litert_equals_the_torch_step(hand_model, variant):
    """LiteRTDecodeStep (two graphs, numpy's SVD between) gives DecodeStep's seven outputs to float rounding, for
    left and right hands, with and without the refined 2D joints, direct or mesh joints, camera refit, world
    evidence; no hands give empty outputs."""
    from handos.model.litert_decoder import LiteRTDecodeStep
    from handos.model.pipeline import DecodeStep

    torch.manual_seed(4)
    fit = variant.pop("fit_camera", True) if variant else True
    cfg = DecoderConfig(d_model=32, n_heads=2, n_layers_2d=1, n_layers_3d=2, n_coarse=24, **variant)
    dec = HandOSDecoder(cfg, hand_model).eval()
    with torch.no_grad():
        for p in dec.parameters():
            p.add_(0.05 * torch.randn_like(p))
    template = (hand_model.rest_vertices.float(), hand_model.rest_joints.float(), hand_model.skin_weights.float())
    step = DecodeStep(dec, template, fit_camera=fit)
    lite = LiteRTDecodeStep(dec, step.rest_joints, step.skin_basis, fit)
    raw = _inputs_raw(6)
    from handos.model.geometry import landmark_roi

    roi = landmark_roi(raw[0])
    with torch.no_grad():
        ref = step(*raw, roi)
    got = lite.run(*(t.numpy() for t in raw), roi.numpy())
    assert 0 < int(ref[5].sum()) < 6  # both hands among the six
    for r, g in zip(ref, got):
        assert g.shape == tuple(r.shape) and g.dtype == r.numpy().dtype
        assert np.allclose(g, r.numpy(), rtol=1e-4, atol=1e-4), np.abs(g.astype(float) - r.numpy()).max()
    empty = lite.run(*(t[:0].numpy() for t in raw), roi[:0].numpy())
    assert [e.shape[0] for e in empty] == [0] * 7 and empty[4].shape[1:] == tuple(ref[4].shape[1:])


def test_the_cpu_decode_step_runs_no_torch_compute(model):
    """On the CPU in inference the skinned decode step is LiteRT and numpy only: torch is left with converting the
    inputs to numpy and the outputs back (what makes it fast right after the nets); with gradients on it is the
    differentiable torch step."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    from handos.model.geometry import landmark_roi

    step = model.decode_step()
    raw = _inputs_raw(2)
    inp = DecoderInput(*raw, landmark_roi=landmark_roi(raw[0]))
    with torch.no_grad():
        step.infer(inp)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = step.infer(inp)
    ops = Counter(e.key for e in prof.key_averages() for _ in range(e.count) if e.key.startswith("aten::"))
    conversions = {"aten::detach", "aten::to", "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg",
                   "aten::alias", "aten::_to_copy", "aten::copy_", "aten::empty_strided"}
    assert set(ops) <= conversions, set(ops) - conversions
    assert out[4].shape == (2, model.decoder.num_vertices, 3)
    with torch.enable_grad():
        assert step.infer(inp)[2].requires_grad  # the torch step: gradients flow to the decoder's weights
