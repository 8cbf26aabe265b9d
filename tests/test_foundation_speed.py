"""The fast inference replay (handos.foundation.fast.FastGraph) computes what the plain op-by-op replay does.

Correctness only (no timings): the fast and the TorchScript-traced replays of both nets on random and real
inputs, batch 1 and 3, and the caches that rebuild them when the weights move or the input shape changes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from handos.foundation.fast import FastGraph
from handos.foundation.nets import load_landmark_net, load_palm_detector


@pytest.fixture(scope="session")
def nets():
    """(palm detector, landmark net) on the CPU, float32."""
    return load_palm_detector(), load_landmark_net()


def _real_batch(realdata, size: int, n: int) -> torch.Tensor:
    """n ge2019 images resized to size x size, (n,3,size,size) in [0,1]."""
    import cv2

    paths = sorted((realdata / "ge2019_realworld" / "images").glob("*.jpg"))[:n]
    ims = [cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (size, size)) for p in paths]
    return torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 255


def _assert_same(fast: dict, ref: dict) -> None:
    assert fast.keys() == ref.keys()
    for k in ref:
        assert fast[k].shape == ref[k].shape and fast[k].dtype == ref[k].dtype, k
        scale = float(ref[k].abs().max())
        err = float((fast[k] - ref[k]).abs().max())
        assert err <= 1e-5 * scale + 1e-7, f"{k}: fast replay differs by {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("which", ["palm", "landmark"])
def test_fast_replay_equals_plain_replay(nets, realdata, which):
    net = nets[0] if which == "palm" else nets[1]
    size = net.input_size
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for x in (torch.rand(1, 3, size, size, generator=g), _real_batch(realdata, size, 3)):
            _assert_same(net.graph.fast()(x), net.graph(x))


@pytest.mark.parametrize("mode", ["jit", "1"])
def test_fast_replay_is_what_the_nets_run(nets, monkeypatch, mode):
    palm, lm = nets
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    monkeypatch.setenv("HANDOS_FAST_REPLAY", mode)
    fast = lm(x)
    monkeypatch.setenv("HANDOS_FAST_REPLAY", "0")
    plain = lm(x)
    _assert_same(fast, plain)
    assert isinstance(lm.graph.fast(), FastGraph)
    # the public contract of the outputs is unchanged (plain NCHW feature map, batched shapes)
    assert fast["feature_map"].is_contiguous() and fast["landmarks"].shape == (2, 21, 3)


def test_fast_replay_follows_the_weights_when_moved():
    palm = load_palm_detector()
    first = palm.graph.fast()
    assert palm.graph.fast() is first  # built once
    palm = palm.to(torch.float64)
    assert palm.graph.fast() is not first
    x = torch.rand(1, 3, 192, 192, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    reg, scores = palm(x)
    assert reg.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(reg, palm.graph(x)["regressors"])


def test_traced_replay_is_built_once_per_shape(nets):
    palm = nets[0]
    x1 = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(4))
    t1 = palm.graph.traced(x1)
    assert palm.graph.traced(x1.clone()) is t1
    assert palm.graph.traced(torch.rand(3, 3, 192, 192)) is not t1
    with torch.no_grad():
        _assert_same(t1(x1), palm.graph(x1))
        reg, _ = palm(x1)  # the default CPU path is the traced one
    torch.testing.assert_close(reg, palm.graph(x1)["regressors"], rtol=1e-5, atol=1e-4)
