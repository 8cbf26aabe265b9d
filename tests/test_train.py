"""Training: loss goes down, resume continues exactly, the DDP path runs (world size 1 in-process, and two
processes under torchrun on the CPU with gloo)."""
from __future__ import annotations

import socket

import pytest
import torch

TINY_TOML = """
[model]
d_model = 32
n_heads = 2
n_layers_2d = 1
n_layers_3d = 1
n_coarse = 24
[train]
steps = {steps}
batch_size = 4
threads = 1
warmup = 2
log_every = 1
ckpt_every = 2
out_dir = "{out}"
"""


@pytest.fixture(scope="session")
def hand_model():
    """The project's hand model."""
    from handos.hand import HandModel

    return HandModel()


def _config(tmp_path, steps: int, out) -> str:
    path = tmp_path / f"cfg_{steps}.toml"
    path.write_text(TINY_TOML.format(steps=steps, out=out))
    return str(path)


def test_steps_reduce_loss(hand_model):
    from handos.data.synthetic import SyntheticHands
    from handos.model.decoder import DecoderConfig, HandOSDecoder
    from handos.model.losses import decoder_losses, mesh_edges

    torch.manual_seed(0)
    dec = HandOSDecoder(DecoderConfig(d_model=32, n_heads=2, n_layers_2d=1, n_layers_3d=1, n_coarse=24), hand_model)
    inp, tgt = SyntheticHands(hand_model).sample(16, torch.Generator().manual_seed(1))
    faces = dec.faces_right
    edges = mesh_edges(faces)
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss, _ = decoder_losses(dec(inp), tgt, inp, faces, edges)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_resume_continues_identically(hand_model, tmp_path):
    from safetensors.torch import load_file

    from handos.train.loop import train

    a, b = tmp_path / "a", tmp_path / "b"
    train(_config(tmp_path, 4, a), hand_model=hand_model, progress=False)
    train(_config(tmp_path, 2, b), hand_model=hand_model, progress=False)
    train(_config(tmp_path, 4, b), resume=True, hand_model=hand_model, progress=False)
    wa, wb = load_file(str(a / "decoder.safetensors")), load_file(str(b / "decoder.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
    assert (a / "log.jsonl").read_text().count("\n") == 4
    assert (a / "decoder_config.json").exists()


def test_ddp_world_size_one(hand_model, tmp_path, monkeypatch):
    import torch.distributed as dist

    from handos.train.loop import train

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                 "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    try:
        summary = train(_config(tmp_path, 2, tmp_path / "ddp"), hand_model=hand_model, ddp=True, progress=False)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert summary["world_size"] == 1 and (tmp_path / "ddp" / "decoder.safetensors").exists()


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    """The documented multi-GPU command, run with two CPU processes (gloo): one log, one summary, world size 2."""
    import json
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "handos", "train", "--config", _config(tmp_path, 3, out),
           "--device", "cpu", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    summaries = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["world_size"] == 2 and summaries[0]["steps"] == 3
    assert (out / "log.jsonl").read_text().count("\n") == 3  # rank 0 logs, once per step
    assert (out / "decoder.safetensors").exists()


def test_bad_config_is_a_clean_error(tmp_path):
    from handos.errors import ConfigError
    from handos.train.loop import load_config

    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_config(bad)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "nope.toml")


def test_cli_help():
    from handos.cli import train as cli

    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0


def test_bone_loss_is_zero_on_target_and_sees_short_fingers(hand_model):
    """The bone-length term: 0 when the reported joints are the target, > 0 when the fingers are shortened."""
    from types import SimpleNamespace

    from handos.data.synthetic import SyntheticHands
    from handos.model.losses import LossWeights, bone_lengths, decoder_losses, mesh_edges

    inp, tgt = SyntheticHands(hand_model).sample(3, torch.Generator().manual_seed(2))
    j = tgt.joints_3d  # (3,21,3)
    assert bone_lengths(j).shape == (3, 20)
    assert torch.allclose(bone_lengths(j)[:, 0], (j[:, 1] - j[:, 0]).norm(dim=-1))
    short = j.clone()
    short[:, 1:] = short[:, 1:] * 0.9  # every joint pulled 10% towards the wrist
    n = len(inp)
    roi = torch.tensor([[100.0, 100.0, 200.0, 200.0, 0.0]]).expand(n, 5)
    faces = torch.tensor([[0, 1, 2]])
    terms = []
    for joints in (j, short):
        out = SimpleNamespace(joints_3d=joints, vertices=tgt.vertices, joints_2d=tgt.joints_2d,
                              joints_2d_score=torch.full((n, 21), 0.5), cam_t=tgt.cam_t,
                              aux={"roi": roi, "joints_3d_aux": joints})
        terms.append(decoder_losses(out, tgt, inp, faces, mesh_edges(faces), LossWeights(bone=1.0))[1]["bone"])
    assert terms[0] < 1e-5 and terms[1] > 0.1, terms
