"""The training loop: synthetic batches -> decoder -> losses; AMP on CUDA, DDP under torchrun,
jsonl logs, safetensors checkpoints and exact resume."""
from __future__ import annotations

import json
import math
import os
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from handos.config import check_keys
from handos.device import resolve_device
from handos.errors import ConfigError


@dataclass
class TrainConfig:
    """The [train] table of a config file."""

    steps: int = 6000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    amp: bool = True
    log_every: int = 25
    ckpt_every: int = 250
    out_dir: str = "runs/decoder"


def _build(cls, table: dict, name: str):
    """Dataclass from a TOML table; unknown keys are a ConfigError."""
    check_keys(table, cls, "keys", f" in [{name}]")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    return cls(**kwargs)


def load_config(path: str | Path) -> dict:
    """Parse a training TOML into dataclasses: model, data, noise_scale, loss, train."""
    from handos.data.synthetic import SynthConfig
    from handos.model.decoder import DecoderConfig
    from handos.model.losses import LossWeights

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config {path} not found; see handos/train/configs/default.toml")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config {path} is not valid TOML: {err}") from None
    bad = set(raw) - {"model", "data", "loss", "train"}
    if bad:
        raise ConfigError(f"unknown tables {sorted(bad)} in {path}; use [model], [data], [loss], [train]")
    data = dict(raw.get("data", {}))
    noise = float(data.pop("noise_scale", 1.0))
    return {"model": _build(DecoderConfig, raw.get("model", {}), "model"),
            "data": _build(SynthConfig, data, "data"), "noise_scale": noise,
            "loss": _build(LossWeights, raw.get("loss", {}), "loss"),
            "train": _build(TrainConfig, raw.get("train", {}), "train")}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 1% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _device(name: str) -> torch.device:
    """handos.device.resolve_device, honouring LOCAL_RANK under torchrun when the device is plain 'cuda'."""
    dev = resolve_device(name)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def save_checkpoint(out: Path, model, opt, step: int, gen: torch.Generator) -> None:
    """Weights (safetensors + config json) and trainer state (optimizer, step, RNG) for --resume."""
    from handos.model.decoder import save_decoder

    save_decoder(model, out / "checkpoint.safetensors")
    tmp = out / "trainer_state.pt.tmp"
    torch.save({"step": step, "optimizer": opt.state_dict(), "generator": gen.get_state()}, tmp)
    os.replace(tmp, out / "trainer_state.pt")


def train(config_path: str | Path, resume: bool = False, overrides: dict | None = None, hand_model=None,
          ddp: bool | None = None, progress: bool = True) -> dict:
    """Train the decoder per a config file; returns a summary (final loss, steps, seconds, out_dir)."""
    import torch.distributed as dist
    from tqdm import tqdm

    from handos.data.error_model import ErrorModel
    from handos.data.synthetic import SyntheticHands
    from handos.model.decoder import HandOSDecoder, save_decoder
    from handos.model.losses import decoder_losses, mesh_edges

    cfgs = load_config(config_path)
    tcfg: TrainConfig = cfgs["train"]
    for k, v in (overrides or {}).items():
        if v is not None:
            setattr(tcfg, k, type(getattr(tcfg, k))(v))
    use_ddp = ddp if ddp is not None else int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = _device(tcfg.device)
    rank, world = 0, 1
    if use_ddp:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cpu":
        torch.set_num_threads(max(1, tcfg.threads))
    else:
        torch.cuda.set_device(device)
    torch.manual_seed(tcfg.seed)  # identical initial weights on every rank
    if hand_model is None:
        from handos.hand import HandModel

        hand_model = HandModel()
    hand_model = hand_model.to(device)
    model = HandOSDecoder(cfgs["model"], hand_model.cpu()).to(device)
    hand_model = hand_model.to(device)
    synth = SyntheticHands(hand_model, ErrorModel.load(noise_scale=cfgs["noise_scale"]), cfgs["data"],
                           joint_map=model.joint_map)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(tcfg.seed * 1000 + rank)  # synthetic data: a seed per rank
    out = Path(tcfg.out_dir)
    start = 0
    if resume:
        state_path = out / "trainer_state.pt"
        if not state_path.exists():
            raise ConfigError(f"--resume: no checkpoint in {out} (trainer_state.pt missing)")
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(out / "checkpoint.safetensors")))
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        gen.set_state(state["generator"] if world == 1 else torch.Generator().manual_seed(tcfg.seed * 1000 + rank + start).get_state())
    net = torch.nn.parallel.DistributedDataParallel(model) if use_ddp else model
    faces = model.faces_right.to(device)
    edges = mesh_edges(faces)
    amp = tcfg.amp and device.type == "cuda"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(
            {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in cfgs.items()}, indent=1, default=str))
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    t0 = time.time()
    bar = tqdm(range(start, tcfg.steps), initial=start, total=tcfg.steps, disable=not progress or rank != 0,
               mininterval=5.0, desc="train")
    running, last_terms = None, {}
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tcfg)
        inp, target = synth.sample(tcfg.batch_size, gen, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            pred = net(inp)
        pred_f = type(pred)(**{k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
                               for k, v in vars(pred).items()})
        loss, terms = decoder_losses(pred_f, target, inp, faces, edges, cfgs["loss"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        lv = float(loss.detach())
        running = lv if running is None else 0.98 * running + 0.02 * lv
        last_terms = terms
        bar.set_postfix(loss=f"{running:.3f}", joint_cm=f"{terms['joint']:.2f}")
        done = step + 1
        if log and (done % tcfg.log_every == 0 or done == tcfg.steps):
            log.write(json.dumps({"step": done, "loss": lv, "loss_ema": running, "lr": lr_at(step, tcfg),
                                  "elapsed_s": round(time.time() - t0, 1), **terms}) + "\n")
            log.flush()
        if rank == 0 and (done % tcfg.ckpt_every == 0 or done == tcfg.steps):
            save_checkpoint(out, model, opt, done, gen)
    if rank == 0:
        save_decoder(model, out / "decoder.safetensors")
        log.close()
    if use_ddp:
        dist.barrier()
    return {"steps": tcfg.steps, "start": start, "loss_ema": running, "terms": last_terms,
            "seconds": time.time() - t0, "out_dir": str(out), "world_size": world}
