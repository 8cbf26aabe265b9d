"""Fine-tuning on people's labels (`handos train --finetune DATA --out DIR`).

Stages, each resumable (checkpoints in DIR/.finetune; rerunning the same command continues):
1. palm detector (`--foundation all`): SSD classification + box/keypoint regression on letterboxed views of
   the training images; palm boxes and keypoints come from the labelled joints through a template fitted on
   the original detector's own detections of the training hands (a built-in one when it finds none).
2. landmark net (`--foundation landmark|all`): L1 on its 21 x, y in jittered ROI crops; its other heads
   (relative depth, world landmarks, presence, handedness), which the decoder reads, are distilled from the
   starting net on the same crops (with `--grayscale`, on the colour crop), so they do not drift.
3. decoder (always): real hands (evidence = the current landmark net on jittered ROI crops) supervise the
   refined 2D joints and the reprojection of the 3D joints, and 3D where labelled; synthetic batches
   (handos.data.synthetic) are mixed in for the 3D (and, with a frozen landmark net, the 2D too).
Before/after metrics on a seeded held-out split come from handos.eval (the eval contract's metrics).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from handos.errors import ConfigError, HandosError
from handos.foundation import MAX_LANDMARK_PASSES

FOUNDATION_MODES = ("frozen", "landmark", "all")
LANDMARK_FILE = "hand_landmark_full.safetensors"
PALM_FILE = "palm_detection_full.safetensors"
REPORT_FILE = "finetune_report.json"
STATE_DIR = ".finetune"
CROP = 224
PALM = 192
# palm keypoints / box in a hand frame (origin wrist, unit = wrist->middle1, second axis towards index1):
# (a, b) of the 7 palm keypoints, box centre, then box (w, h) / unit; used when the original detector
# finds none of the training hands
DEFAULT_PALM_TEMPLATE = np.array([[0.05, 0.0], [0.98, 0.33], [1.0, 0.0], [0.93, -0.3], [0.8, -0.55],
                                  [0.18, 0.48], [0.55, 0.75], [0.55, 0.05], [1.3, 1.3]])


class FinetuneError(HandosError):
    """A fine-tuning run cannot go on (bad data, a different run already in the output folder)."""


@dataclass
class FinetuneConfig:
    """Options of a fine-tuning run.

    Step defaults chosen on ge2019 (seed-0 split, 150 train / 50 held out): landmark 200 -> 500 -> 1000 steps gave
    held-out PCK2D@0.05 0.876 / 0.924 / 0.924 (with the extra landmark pass), decoder 800 -> 1500 steps PA-MPJPE
    7.00 -> 6.73 mm; Adam 3e-4 on the landmark net was worse than 1e-4 (0.881 vs 0.895 without the extra pass).
    200 images with `--foundation landmark` take 6.6 min on an idle 2-core CPU (`all`: + 150 palm steps, a few minutes).
    """

    data: str
    out: str
    weights: str | None = None
    foundation: str = "frozen"
    val_frac: float = 0.25
    seed: int = 0
    grayscale: bool = False
    data_licence: str | None = None
    decoder_steps: int = 1500
    decoder_batch: int = 24  # real hands per decoder step (plus as many synthetic ones)
    landmark_steps: int = 500
    landmark_batch: int = 16
    palm_steps: int = 150
    palm_batch: int = 8
    lr_decoder: float = 2e-4
    lr_landmark: float = 1e-4
    lr_palm: float = 5e-5
    distill: float = 1.0  # weight of the landmark net's anchored heads
    # inference settings written into the weights folder; None = the choice measured best for the mode: with a
    # fine-tuned landmark net, one more landmark pass on the ROI its own landmarks give (the ROIs it was trained
    # on) and its own 2D joints reported (the decoder's 2D refinement learned MediaPipe's errors, not the
    # adapted net's); with a frozen one, neither (the shipped behaviour)
    landmark_passes: int | None = None
    refine_2d: bool | None = None
    crops_per_hand: int = 8
    views_per_image: int = 4
    ckpt_every: int = 25
    device: str = "cpu"
    threads: int = 2

    def __post_init__(self) -> None:
        """Reject bad choices early."""
        if self.foundation not in FOUNDATION_MODES:
            raise ConfigError(f"--foundation must be one of {', '.join(FOUNDATION_MODES)}, got {self.foundation!r}")
        for k in ("decoder_steps", "landmark_steps", "palm_steps"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{k} must be >= 0, got {getattr(self, k)}")
        if self.landmark_passes is not None and not 0 <= self.landmark_passes <= MAX_LANDMARK_PASSES:
            raise ConfigError(f"--landmark-passes must be in 0..{MAX_LANDMARK_PASSES}, got {self.landmark_passes}")

    @property
    def tunes_landmark_net(self) -> bool:
        """Whether this run fine-tunes the landmark net."""
        return self.foundation in ("landmark", "all") and self.landmark_steps > 0

    def inference_options(self, base_passes: int, base_refine: bool) -> tuple[int, bool]:
        """(landmark passes, report the decoder's refined 2D) for the weights folder this run writes, given the
        starting weights' own; a frozen landmark net keeps the starting weights' settings unless told."""
        tuned = self.tunes_landmark_net
        passes = (1 if tuned else base_passes) if self.landmark_passes is None else self.landmark_passes
        refine = (False if tuned else base_refine) if self.refine_2d is None else self.refine_2d
        return passes, refine

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun to resume this run (everything but device, threads and progress)."""
        d = asdict(self)
        for k in ("device", "threads", "ckpt_every"):
            d.pop(k)
        return d


# ----------------------------------------------------------------------------------- helpers
def _gen(seed: int, stage: str, step: int) -> torch.Generator:
    """A generator for one step of one stage (same draws after a resume)."""
    salt = sum(ord(c) * 31 ** i for i, c in enumerate(stage)) % 100_003
    return torch.Generator().manual_seed(seed * 1_000_003 + salt * 10_007 + step)


def _camera(im) -> dict:
    """The image's camera, else the default one (as handos.eval uses)."""
    from handos.io.camera import Camera

    return Camera.from_any(im.camera, im.width, im.height, None).to_dict()


def _hand_roi(joints: np.ndarray) -> np.ndarray:
    """MediaPipe's landmarks -> ROI rule on labelled joints (NaN ones filled; box fallback)."""
    from handos.foundation.roi import PARTIAL_LANDMARKS, roi_from_landmarks

    vis = np.isfinite(joints).all(-1)
    if vis[list(PARTIAL_LANDMARKS)].all():
        j = np.where(vis[:, None], joints, np.nanmean(joints, 0))
        return roi_from_landmarks(torch.as_tensor(j[None], dtype=torch.float64))[0].numpy()
    p = joints[vis]
    lo, hi = p.min(0), p.max(0)
    return np.array([*(lo + hi) / 2, 2.0 * (hi - lo).max(), 2.0 * (hi - lo).max(), 0.0])


def _jitter(roi: np.ndarray, g: torch.Generator) -> np.ndarray:
    """An ROI shifted, scaled and turned as the foundation's ROIs are off (~0.1 rad, ~8% size)."""
    r = torch.randn(4, generator=g).numpy()
    out = roi.copy()
    out[:2] += r[:2] * 0.06 * roi[2]
    out[2:4] *= math.exp(0.1 * r[2])
    out[4] += 0.15 * r[3]
    return out


def _affine_points(pts: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Apply a (2,3) affine map to points (...,2)."""
    return pts @ a[:, :2].T + a[:, 2]


# ----------------------------------------------------------------------------------- cached crops
@dataclass
class HandCrops:
    """Jittered ROI crops of the training hands: crops (M,3,224,224) uint8, their ROIs, GT in crop px."""

    crops: torch.Tensor
    teacher_crops: torch.Tensor | None
    rois: torch.Tensor  # (M,5) px float64
    hand: torch.Tensor  # (M,) index into the hand list
    gt_uv: torch.Tensor  # (M,21,2) crop px (0 where unlabelled)
    mask: torch.Tensor  # (M,21) bool


def make_hand_crops(images: list, hands: list[tuple[int, int]], per_hand: int, seed: int, grayscale: bool) -> HandCrops:
    """per_hand crops of every hand (the first unjittered), from the (grey) images; colour copies for a teacher."""
    from handos.data.labelled import read_rgb, to_grayscale
    from handos.foundation.roi import crop_affine, crop_images_cv2

    crops, tcrops, rois, owner, uvs, masks = [], [], [], [], [], []
    g = torch.Generator().manual_seed(seed)
    for k, (i, j) in enumerate(hands):
        im = images[i]
        hand = im.hands[j]
        rgb = read_rgb(im.path)
        base = _hand_roi(hand.joints_2d)
        rs = np.stack([base] + [_jitter(base, g) for _ in range(per_hand - 1)])
        rt = torch.as_tensor(rs, dtype=torch.float64)
        idx = torch.zeros(len(rs), dtype=torch.long)
        src = to_grayscale(rgb) if grayscale else rgb
        crops.append(crop_images_cv2([src], idx, rt, CROP, "replicate").to(torch.uint8))
        if grayscale:
            tcrops.append(crop_images_cv2([rgb], idx, rt, CROP, "replicate").to(torch.uint8))
        aff = crop_affine(rt, CROP).numpy()
        vis = hand.visible
        for a in aff:
            uv = _affine_points(np.nan_to_num(hand.joints_2d), a)
            uvs.append(np.where(vis[:, None], uv, 0.0))
            masks.append(vis)
        rois.append(rt)
        owner += [k] * len(rs)
    return HandCrops(torch.cat(crops), torch.cat(tcrops) if tcrops else None, torch.cat(rois),
                     torch.tensor(owner), torch.as_tensor(np.stack(uvs), dtype=torch.float32),
                     torch.as_tensor(np.stack(masks)))


@torch.no_grad()
def run_landmarks(graph, crops: torch.Tensor, batch: int = 32) -> dict[str, torch.Tensor]:
    """The landmark graph on uint8 crops (M,3,224,224) -> its outputs (landmarks (M,21,3), presence, handedness, world)."""
    outs: dict[str, list] = {}
    for s in range(0, crops.shape[0], batch):
        o = graph(crops[s:s + batch].float() / 255.0)
        b = o["landmarks"].shape[0]
        for k, v in (("landmarks", o["landmarks"].reshape(b, 21, 3)), ("presence", o["presence"].reshape(b)),
                     ("handedness", o["handedness"].reshape(b)), ("world", o["world"].reshape(b, 21, 3))):
            outs.setdefault(k, []).append(v.detach().float())
    return {k: torch.cat(v) for k, v in outs.items()}


def _trainable(graph, first_op: int = 0) -> dict[str, torch.Tensor]:
    """The weights of the graph's ops from `first_op` on, as leaf tensors that take gradients (by buffer name)."""
    keys = {op.get(k) for op in graph._ops[first_op:] for k in ("weight", "bias", "alpha")} - {None}
    params = {}
    for k in sorted(keys):
        name = graph._names[k]
        t = getattr(graph, name)
        t.requires_grad_(True)
        params[name] = t
    return params


def run_ops(graph, env: dict[str, torch.Tensor], lo: int, hi: int | None = None) -> dict[str, torch.Tensor]:
    """Replay the graph's ops lo..hi on the values in env (the ones before lo already there)."""
    for op in graph._ops[lo:hi]:
        env[op["output"]] = graph.run_op(op, [graph._value(env, n) for n in op["inputs"]])
    return env


def landmark_cut(graph, max_side: int = 14, max_channels: int = 128) -> tuple[int, str]:
    """The first op boundary crossed by one tensor of at most max_side px and max_channels channels:
    the layers before it stay frozen and their output is cached (about half the cost of a step)."""
    ops = graph._ops
    prod = {op["output"]: i for i, op in enumerate(ops)}
    with torch.no_grad():
        env = run_ops(graph, {graph.graph["input"]: torch.zeros(1, 3, CROP, CROP).contiguous(memory_format=torch.channels_last)}, 0)
    for cut in range(1, len(ops)):
        cross = {n for op in ops[cut:] for n in op["inputs"] if n in prod and prod[n] < cut}
        if len(cross) == 1:
            name = next(iter(cross))
            shape = env[name].shape
            if len(shape) == 4 and shape[2] <= max_side and shape[1] <= max_channels:
                return cut, name
    return 0, graph.graph["input"]


def save_graph(graph, src: Path, dst: Path) -> None:
    """Write a (fine-tuned) foundation graph in the converter's safetensors format, graph metadata from `src`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    state = {k: getattr(graph, graph._names[k]).detach().cpu().float().contiguous() for k in keys}
    tmp = dst.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, dst)


# ----------------------------------------------------------------------------------- stages
class Stage:
    """One resumable training stage: its params, optimizer and step saved in DIR/.finetune/<name>.pt."""

    def __init__(self, name: str, state_dir: Path, params: dict[str, torch.Tensor], lr: float, steps: int):
        self.name, self.steps = name, steps
        self.path = state_dir / f"{name}.pt"
        self.params = params
        self.opt = torch.optim.Adam(list(params.values()), lr=lr)
        self.lr = lr
        self.step = 0
        if self.path.exists():
            st = torch.load(self.path, map_location="cpu", weights_only=True)
            with torch.no_grad():
                for k, v in st["params"].items():
                    params[k].copy_(v)
            self.opt.load_state_dict(st["optimizer"])
            self.step = int(st["step"])

    @property
    def done(self) -> bool:
        """All steps run."""
        return self.step >= self.steps

    def set_lr(self) -> None:
        """Short warm-up then cosine to 10%."""
        warm = min(20, max(1, self.steps // 10))
        t = self.step / max(1, self.steps)
        f = (self.step + 1) / warm if self.step < warm else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))
        for gr in self.opt.param_groups:
            gr["lr"] = self.lr * f

    def save(self) -> None:
        """Checkpoint (atomic)."""
        tmp = self.path.with_suffix(".tmp")
        torch.save({"params": {k: v.detach().cpu() for k, v in self.params.items()},
                    "optimizer": self.opt.state_dict(), "step": self.step}, tmp)
        os.replace(tmp, self.path)


def _loop(stage: Stage, step_fn, cfg: FinetuneConfig, budget: list[int], progress: bool, log) -> bool:
    """Run a stage to its end or until the step budget of this run is spent; True when the stage is done."""
    from tqdm import tqdm

    bar = tqdm(total=stage.steps, initial=stage.step, desc=f"finetune {stage.name}", disable=not progress,
               mininterval=2.0)
    t0, n0 = time.time(), stage.step
    while not stage.done:
        if budget[0] <= 0:
            stage.save()
            bar.close()
            return False
        stage.set_lr()
        loss, terms = step_fn(_gen(cfg.seed, stage.name, stage.step))
        lv = float(loss.detach())
        stage.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(stage.params.values()), 1.0)
        stage.opt.step()
        stage.step += 1
        budget[0] -= 1
        bar.update(1)
        bar.set_postfix(loss=f"{lv:.4f}")
        if stage.step % cfg.ckpt_every == 0 or stage.done:
            stage.save()
            log({"stage": stage.name, "step": stage.step, "loss": lv, **terms,
                 "s_per_step": round((time.time() - t0) / max(1, stage.step - n0), 3)})
    bar.close()
    return True


def palm_template(teacher, images: list, hands: list[tuple[int, int]], grayscale: bool) -> np.ndarray:
    """Palm keypoints/box in the hand frame, as the original detector places them on the training hands."""
    from handos.data.labelled import read_rgb
    from handos.foundation.anchors import palm_anchors
    from handos.foundation.palm import PALM_OPTIONS, decode_detections, letterbox_rois, weighted_nms
    from handos.foundation.roi import crop_affine, crop_images_cv2

    anchors = palm_anchors(torch.device("cpu"), torch.float32)
    rows = []
    by_image: dict[int, list[int]] = {}
    for i, j in hands:
        by_image.setdefault(i, []).append(j)
    for i, js in by_image.items():
        im = images[i]
        rgb = read_rgb(im.path)  # the original detector on the colour image (its own domain)
        lb, _ = letterbox_rois(torch.tensor([[rgb.shape[1], rgb.shape[0]]]), PALM)
        x = crop_images_cv2([rgb], torch.zeros(1, dtype=torch.long), lb, PALM, "zero") / 255.0
        with torch.no_grad():
            o = teacher(x)
        boxes, kps, scores = decode_detections(o["regressors"], o["scores"], anchors, PALM_OPTIONS)
        keep = scores[0] >= 0.5
        det = weighted_nms(boxes[0][keep], kps[0][keep], scores[0][keep], 0.3, 4)
        a = crop_affine(lb, PALM)[0].numpy()
        for j in js:
            frame = _hand_frame(_affine_points(np.nan_to_num(im.hands[j].joints_2d), a) / PALM, im.hands[j].visible)
            if frame is None:
                continue
            o0, e1, e2, unit = frame
            for b, k in zip(det.boxes.numpy(), det.keypoints.numpy()):
                if np.linalg.norm(k[0] - o0) > 0.5 * unit:
                    continue
                pts = np.concatenate([k, ((b[:2] + b[2:]) / 2)[None]])
                ab = np.stack([(pts - o0) @ e1, (pts - o0) @ e2], -1) / unit
                rows.append(np.concatenate([ab, [[(b[2] - b[0]) / unit, (b[3] - b[1]) / unit]]]))
                break
    if len(rows) < 3:
        return DEFAULT_PALM_TEMPLATE.copy()
    return np.median(np.stack(rows), 0)


def _hand_frame(j: np.ndarray, vis: np.ndarray):
    """(origin, axis 1, axis 2, unit) of a hand's frame from its joints (wrist, middle1, index1), or None."""
    if not (vis[0] and vis[9] and vis[5]):
        return None
    o0 = j[0]
    d = j[9] - o0
    unit = float(np.linalg.norm(d))
    if unit < 1e-6:
        return None
    e1 = d / unit
    e2 = np.array([-e1[1], e1[0]])
    if (j[5] - o0) @ e2 < 0:
        e2 = -e2
    return o0, e1, e2, unit


@dataclass
class PalmViews:
    """Augmented letterbox views of the training images: inputs (P,3,192,192) uint8 and per-view targets."""

    views: torch.Tensor
    targets: list[np.ndarray]  # per view: (h, 18) [box cx, cy, w, h, 7 x (x, y)] normalised to the view


def make_palm_views(images: list, train_ids: list[int], per_image: int, template: np.ndarray, seed: int,
                    grayscale: bool) -> PalmViews:
    """per_image views (the first = MediaPipe's letterbox) of each training image with their palm targets."""
    from handos.data.labelled import read_rgb
    from handos.foundation.palm import letterbox_rois
    from handos.foundation.roi import crop_affine, crop_images_cv2

    g = torch.Generator().manual_seed(seed + 7)
    views, targets = [], []
    for i in train_ids:
        im = images[i]
        rgb = read_rgb(im.path, grayscale)
        lb, _ = letterbox_rois(torch.tensor([[rgb.shape[1], rgb.shape[0]]]), PALM)
        rs = [lb[0].numpy()]
        for _ in range(per_image - 1):
            r = torch.rand(3, generator=g).numpy()
            v = lb[0].numpy().copy()
            v[2:4] *= 0.75 + 0.5 * r[2]
            v[:2] += (r[:2] - 0.5) * 0.2 * v[2]
            rs.append(v)
        rt = torch.as_tensor(np.stack(rs), dtype=torch.float64)
        views.append(crop_images_cv2([rgb], torch.zeros(len(rs), dtype=torch.long), rt, PALM, "zero").to(torch.uint8))
        for a in crop_affine(rt, PALM).numpy():
            tg = []
            for h in im.hands:
                frame = _hand_frame(_affine_points(np.nan_to_num(h.joints_2d), a) / PALM, h.visible)
                if frame is None:
                    continue
                o0, e1, e2, unit = frame
                pts = o0 + (template[:8, :1] * e1 + template[:8, 1:2] * e2) * unit  # (8,2)
                wh = template[8] * unit
                tg.append(np.concatenate([pts[7], wh, pts[:7].reshape(-1)]))
            targets.append(np.asarray(tg, dtype=np.float32).reshape(-1, 18))
    return PalmViews(torch.cat(views), targets)


def palm_loss(reg: torch.Tensor, logits: torch.Tensor, targets: list[np.ndarray], anchors: torch.Tensor):
    """SSD loss: BCE on anchors (positives near a target palm's centre, hard negatives) + L1 regression."""
    a_c = anchors[:, :2]
    cls_terms, reg_terms = [], []
    for b, tg in enumerate(targets):
        lg = logits[b, :, 0]
        label = torch.zeros_like(lg)
        ignore = torch.zeros_like(lg, dtype=torch.bool)
        pos_reg = []
        for t in torch.as_tensor(tg):
            side = float(t[2:4].max())
            d = (a_c - t[:2]).abs().amax(-1)
            pos = d < 0.2 * side
            if not pos.any():
                pos = d <= d.min()
            ignore |= (d < 0.5 * side) & ~pos
            label[pos] = 1.0
            target = torch.cat([(t[:2] - a_c[pos]) * PALM, t[2:4].expand(int(pos.sum()), 2) * PALM,
                                ((t[4:].reshape(7, 2)[None] - a_c[pos][:, None]) * PALM).reshape(-1, 14)], -1)
            pos_reg.append((reg[b, pos] - target).abs().mean() / PALM * 10)
        bce = F.binary_cross_entropy_with_logits(lg, label, reduction="none")
        posm = label > 0
        negm = ~posm & ~ignore
        neg = bce[negm]
        hard = neg.topk(min(64, neg.numel())).values.mean() if neg.numel() else lg.sum() * 0
        cls_terms.append((bce[posm].mean() if posm.any() else lg.sum() * 0) + hard + neg.mean() * 0.5)
        if pos_reg:
            reg_terms.append(torch.stack(pos_reg).mean())
    cls = torch.stack(cls_terms).mean()
    rg = torch.stack(reg_terms).mean() if reg_terms else cls * 0
    return cls + rg, {"cls": float(cls.detach()), "reg": float(rg.detach())}


# ----------------------------------------------------------------------------------- decoder data
@dataclass
class RealEvidence:
    """Decoder inputs of real training hands and their labels."""

    joints_2d: torch.Tensor
    joints_z: torch.Tensor
    presence: torch.Tensor
    world: torch.Tensor
    camera: torch.Tensor
    gt_2d: torch.Tensor  # (M,21,2) px, 0 where unlabelled
    mask: torch.Tensor  # (M,21) bool
    gt_3d: torch.Tensor  # (M,21,3) m camera frame (0 where none)
    has_3d: torch.Tensor  # (M,) bool


def real_evidence(graph, crops: HandCrops, images: list, hands: list[tuple[int, int]]) -> RealEvidence:
    """The landmark net on every crop -> DecoderInput rows, with the hand's labels."""
    from handos.foundation.roi import project_landmarks, project_world

    out = run_landmarks(graph, crops.crops)
    rois = crops.rois.float()
    j2d, z = project_landmarks(out["landmarks"], rois, CROP)
    world = project_world(out["world"], rois[:, 4])
    cams, gt2, m, gt3, h3 = [], [], [], [], []
    for k in crops.hand.tolist():
        i, j = hands[k]
        im, h = images[i], images[i].hands[j]
        c = _camera(im)
        cams.append([c["fx"], c["fy"], c["cx"], c["cy"]])
        gt2.append(np.nan_to_num(h.joints_2d))
        m.append(h.visible)
        gt3.append(h.joints_3d if h.joints_3d is not None else np.zeros((21, 3)))
        h3.append(h.joints_3d is not None)
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return RealEvidence(j2d, z, out["presence"], world, f(cams), f(gt2), torch.as_tensor(np.asarray(m)), f(gt3),
                        torch.as_tensor(np.asarray(h3)))


def real_decoder_loss(decoder, ev: RealEvidence, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """2D (refined joints), reprojection of the 3D joints, and 3D + camera where labelled, on real hands."""
    from handos.geometry import project
    from handos.model.decoder import DecoderInput
    from handos.model.geometry import from_roi_frame
    from handos.model.losses import CM

    n = idx.numel()
    inp = DecoderInput(ev.joints_2d[idx], ev.joints_z[idx], ev.presence[idx, None].expand(n, 21).contiguous(),
                       ev.camera[idx], ev.world[idx])
    out = decoder(inp)
    roi = out.aux["roi"]
    size = roi[:, 2:3]
    m = ev.mask[idx].float()
    gt = ev.gt_2d[idx]
    denom = m.sum().clamp_min(1)
    ref = from_roi_frame(out.aux["u_ref"], roi)
    terms = {"joint_2d": ((ref - gt).abs().sum(-1) / size * m).sum() / denom / 2}
    rp = 0
    for j3 in (out.aux["joints_3d_aux"], out.aux["joints_3d_mesh"]):
        proj = project(j3 + out.cam_t[:, None], inp.camera[:, None], min_depth=1e-4)
        rp = rp + (((proj - gt).abs().sum(-1) / size).clamp(max=1.0) * m).sum() / denom / 2
    terms["reproj"] = rp / 2
    h3 = ev.has_3d[idx]
    if h3.any():
        g3 = ev.gt_3d[idx][h3]
        rr = g3 - g3[:, :1]
        terms["joint"] = (out.aux["joints_3d_mesh"][h3] - rr).abs().mean() * CM
        terms["joint_aux"] = (out.aux["joints_3d_aux"][h3] - rr).abs().mean() * CM
        tz, tz_gt = out.cam_t[h3, 2], g3[:, 0, 2]
        terms["camera"] = ((torch.log(tz) - torch.log(tz_gt)).abs()
                           + ((out.cam_t[h3, :2] - g3[:, 0, :2]).abs() / tz_gt[:, None]).sum(-1)).mean() * 10
    w = {"joint_2d": 20.0, "reproj": 5.0, "joint": 1.0, "joint_aux": 1.0, "camera": 1.0}
    total = sum(w[k] * v for k, v in terms.items())
    return total, {f"real_{k}": float(v.detach()) for k, v in terms.items()}


# ----------------------------------------------------------------------------------- evaluation
class _GreyPredictor:
    """A model whose inputs are turned grey first (to score the grayscale domain with handos.eval)."""

    def __init__(self, model):
        self.model = model
        self.version = model.version

    def predict_batch(self, images, cameras=None):
        """Grey each image, then predict."""
        from handos.data.labelled import to_grayscale

        return self.model.predict_batch([to_grayscale(np.asarray(im)) for im in images], cameras)


def evaluate_on(model, images: list, name: str, grayscale: bool) -> dict[str, Any]:
    """handos.eval's metrics of `model` on labelled images (grey with `grayscale`); per-hand lists dropped."""
    from handos.data.labelled import to_eval_annotations
    from handos.eval.run import evaluate

    if not images:
        return {}
    rep = evaluate(to_eval_annotations(images, name), _GreyPredictor(model) if grayscale else model, "/", batch_size=8)
    return {k: v for k, v in rep.items() if k not in ("missed_hands", "false_positive_hands", "dataset", "model")}


# ----------------------------------------------------------------------------------- the run
def _slug(text: str) -> str:
    """A short file-name-safe form of a data name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "data"


def finetune(cfg: FinetuneConfig, progress: bool = True, max_steps: int | None = None) -> dict[str, Any]:
    """Run (or resume) a fine-tuning run; returns the report (also DIR/finetune_report.json) or, when
    `max_steps` stops it early, {"stopped": True, ...} (rerun to continue)."""
    import handos
    from handos.data.labelled import load_labelled, split_images
    from handos.device import resolve_device
    from handos.foundation.nets import LANDMARK_WEIGHTS, PALM_WEIGHTS, load_landmark_net, load_palm_detector
    from handos.model.decoder import load_decoder, save_decoder
    from handos.model.pipeline import FOUNDATION_OPTIONS_FILE, folder_foundation_options, resolve_weights

    dev = resolve_device(cfg.device)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, cfg.threads))
    data = load_labelled(cfg.data)
    out = Path(cfg.out)
    state_dir = out / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    run_file = state_dir / "run.json"
    ident = cfg.identity()
    if run_file.exists():
        prev = json.loads(run_file.read_text())
        if prev["config"] != ident:
            diff = sorted(k for k in ident if prev["config"].get(k) != ident[k])
            raise FinetuneError(f"{out} holds a different fine-tuning run (differs in {', '.join(diff)}); "
                                "use another --out or delete that folder")
        run = prev
    else:
        run = {"config": ident, "seconds": 0.0}
    report_path = out / REPORT_FILE
    if report_path.exists() and run.get("finished"):
        return json.loads(report_path.read_text())
    images = data.images
    train_ids, val_ids = split_images(images, cfg.val_frac, cfg.seed)
    train_imgs, val_imgs = [images[i] for i in train_ids], [images[i] for i in val_ids]
    hands = [(k, j) for k, im in enumerate(train_imgs) for j, h in enumerate(im.hands) if h.visible.sum() >= 6]
    if not hands:
        raise FinetuneError(f"{cfg.data}: no labelled hand left for training after holding out {len(val_ids)} image(s)")
    t_start = time.time()
    log_fh = open(state_dir / "log.jsonl", "a")

    def log(rec: dict) -> None:
        log_fh.write(json.dumps(rec) + "\n")
        log_fh.flush()

    prev_seconds = float(run.get("seconds", 0.0))

    def save_run() -> None:
        run["seconds"] = prev_seconds + (time.time() - t_start)
        tmp = run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(run, indent=1))
        os.replace(tmp, run_file)

    # the starting point: shipped weights or --weights (foundation nets from that folder when it has them)
    dec_path = resolve_weights(cfg.weights)
    base_dir = dec_path.parent
    lm_src = base_dir / LANDMARK_FILE if (base_dir / LANDMARK_FILE).is_file() else LANDMARK_WEIGHTS
    palm_src = base_dir / PALM_FILE if (base_dir / PALM_FILE).is_file() else PALM_WEIGHTS
    base_model = handos.load(weights=cfg.weights, device=dev)
    if "before" not in run:
        run["before"] = evaluate_on(base_model, val_imgs, data.name, cfg.grayscale)
        run["split"] = {"train": len(train_ids), "val": len(val_ids)}
        save_run()
    budget = [max_steps if max_steps is not None else 1 << 60]
    stopped = False

    # 1. palm detector
    palm = load_palm_detector(dev, path=palm_src)
    if cfg.foundation == "all" and cfg.palm_steps > 0:
        from handos.foundation.anchors import palm_anchors

        pg = palm.graph
        params = _trainable(pg)
        st = Stage("palm", state_dir, params, cfg.lr_palm, cfg.palm_steps)
        if not st.done:
            teacher = load_palm_detector(dev, path=palm_src).graph
            tmpl = palm_template(teacher, train_imgs, hands, cfg.grayscale)
            pv = make_palm_views(train_imgs, list(range(len(train_imgs))), cfg.views_per_image, tmpl, cfg.seed,
                                 cfg.grayscale)
            anchors = palm_anchors(torch.device("cpu"), torch.float32)
            log({"stage": "palm", "template": tmpl.round(3).tolist(), "views": len(pv.targets)})

            def palm_step(g):
                idx = torch.randint(0, pv.views.shape[0], (cfg.palm_batch,), generator=g)
                x = pv.views[idx].float() / 255.0
                x = (x * (0.8 + 0.4 * torch.rand(len(idx), 1, 1, 1, generator=g))).clamp(0, 1)
                o = pg(x.to(dev))
                return palm_loss(o["regressors"].cpu(), o["scores"].cpu(), [pv.targets[i] for i in idx.tolist()], anchors)

            stopped = not _loop(st, palm_step, cfg, budget, progress, log)
        for b in pg.buffers():
            b.requires_grad_(False)
        save_run()

    # 2. landmark net (x, y trained; other heads distilled from the starting net)
    lm = load_landmark_net(dev, path=lm_src)
    crops = None
    tuned_lm = cfg.tunes_landmark_net
    if not stopped:
        per_hand = cfg.crops_per_hand if tuned_lm else max(2, cfg.crops_per_hand // 2)
        crops = make_hand_crops(train_imgs, hands, per_hand, cfg.seed, cfg.grayscale)
    if tuned_lm and not stopped:
        lg = lm.graph
        cut, cut_name = landmark_cut(lg)
        params = _trainable(lg, cut)
        st = Stage("landmark", state_dir, params, cfg.lr_landmark, cfg.landmark_steps)
        if not st.done:
            teacher = load_landmark_net(dev, path=lm_src).graph
            tin = crops.teacher_crops if crops.teacher_crops is not None else crops.crops
            tout = run_landmarks(teacher, tin)
            del teacher
            feats = []  # the frozen first layers' output on every crop, cached (float16)
            with torch.no_grad():
                for s0 in range(0, crops.crops.shape[0], 32):
                    x = (crops.crops[s0:s0 + 32].float() / 255.0).to(dev).contiguous(memory_format=torch.channels_last)
                    env = run_ops(lg, {lg.graph["input"]: x}, 0, cut)
                    feats.append(env[cut_name].half().cpu())
            feats_t = torch.cat(feats)
            outs = lg.graph["outputs"]

            def lm_step(g):
                idx = torch.randint(0, crops.crops.shape[0], (cfg.landmark_batch,), generator=g)
                x = feats_t[idx].float().to(dev).contiguous(memory_format=torch.channels_last)
                env = run_ops(lg, {cut_name: x}, cut)
                b = len(idx)
                land = env[outs["landmarks"]].reshape(b, 21, 3).cpu()
                m = crops.mask[idx].float()
                l_xy = ((land[..., :2] - crops.gt_uv[idx]).abs().sum(-1) * m).sum() / m.sum().clamp_min(1) / CROP
                t = {k: v[idx] for k, v in tout.items()}
                l_z = (land[..., 2] - t["landmarks"][..., 2]).abs().mean() / CROP * 10
                l_w = (env[outs["world"]].reshape(b, 21, 3).cpu() - t["world"]).abs().mean() * 100
                pr = env[outs["presence"]].reshape(b).cpu().clamp(1e-4, 1 - 1e-4)
                hd = env[outs["handedness"]].reshape(b).cpu().clamp(1e-4, 1 - 1e-4)
                l_c = F.binary_cross_entropy(pr, t["presence"]) + F.binary_cross_entropy(hd, t["handedness"])
                loss = l_xy * 10 + cfg.distill * (l_z + l_w * 0.1 + l_c * 0.1)
                return loss, {k: float(v.detach()) for k, v in (("xy_px", l_xy * CROP), ("z", l_z), ("world_cm", l_w), ("cls", l_c))}

            stopped = not _loop(st, lm_step, cfg, budget, progress, log)
        for b in lg.buffers():
            b.requires_grad_(False)
        save_run()

    # 3. decoder on the (adapted) landmark net's evidence + synthetic hands
    decoder = load_decoder(dec_path, device=dev).train()
    if not stopped and cfg.decoder_steps > 0:
        from handos.data.error_model import ErrorModel
        from handos.data.synthetic import SyntheticHands
        from handos.hand import HandModel
        from handos.model.losses import LossWeights, decoder_losses, mesh_edges

        params = dict(decoder.named_parameters())
        st = Stage("decoder", state_dir, params, cfg.lr_decoder, cfg.decoder_steps)
        if not st.done:
            ev = real_evidence(lm.graph, crops, train_imgs, hands)
            hand_model = HandModel()
            synth = SyntheticHands(hand_model, ErrorModel.load(), joint_map=decoder.joint_map.cpu())
            faces = decoder.faces_right
            edges = mesh_edges(faces)
            sw = LossWeights()
            if tuned_lm:  # synthetic 2D follows MediaPipe's error model, no longer the adapted net's: 3D only
                sw.joint_2d = sw.oks = sw.score = 0.0

            def dec_step(g):
                idx = torch.randint(0, ev.joints_2d.shape[0], (cfg.decoder_batch,), generator=g)
                loss_r, terms = real_decoder_loss(decoder, ev, idx)
                inp, target = synth.sample(cfg.decoder_batch, g, dev)
                loss_s, sterms = decoder_losses(decoder(inp), target, inp, faces, edges, sw)
                terms["synth_joint_cm"] = sterms["joint"]
                return loss_r + loss_s, terms

            stopped = not _loop(st, dec_step, cfg, budget, progress, log)
        save_run()
    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    if stopped:
        log_fh.close()
        save_run()
        return {"stopped": True, "out": str(out)}

    # the weights folder
    version = f"handos-finetune-{_slug(data.name)}-{cfg.foundation}{'-grey' if cfg.grayscale else ''}"
    decoder.config.version = version
    base_passes = int(folder_foundation_options(dec_path.parent).get("landmark_passes", 0))
    passes, decoder.config.refine_2d = cfg.inference_options(base_passes, decoder.config.refine_2d)
    save_decoder(decoder, out / "decoder.safetensors")
    fopts = out / FOUNDATION_OPTIONS_FILE
    if passes:
        fopts.write_text(json.dumps({"landmark_passes": passes}) + "\n")
    elif fopts.exists():
        fopts.unlink()
    tuned_palm = cfg.foundation == "all" and cfg.palm_steps > 0
    for tuned, net, src, name in ((tuned_lm, lm, lm_src, LANDMARK_FILE), (tuned_palm, palm, palm_src, PALM_FILE)):
        if tuned:
            save_graph(net.graph, src, out / name)
        elif src.parent != Path(LANDMARK_WEIGHTS).parent:  # a fine-tuned net we started from stays with the folder
            shutil.copyfile(src, out / name)
        elif (out / name).exists():
            (out / name).unlink()
    notice = Path(LANDMARK_WEIGHTS).parent / "NOTICE"
    if notice.exists():
        shutil.copyfile(notice, out / "NOTICE")
    model = handos.load(weights=out, device=dev)
    after = evaluate_on(model, val_imgs, data.name, cfg.grayscale)
    run["finished"] = True
    save_run()
    steps = {"palm": cfg.palm_steps if tuned_palm else 0, "landmark": cfg.landmark_steps if tuned_lm else 0,
             "decoder": cfg.decoder_steps}
    report = {"data": str(Path(cfg.data).resolve()), "data_name": data.name,
              "licence": cfg.data_licence or data.licence, "split": run["split"], "steps": sum(steps.values()),
              "steps_by_stage": steps, "seconds": round(run["seconds"], 1), "before": run["before"], "after": after,
              "foundation": cfg.foundation, "grayscale": cfg.grayscale, "seed": cfg.seed, "val_frac": cfg.val_frac,
              "version": model.version, "base_weights": str(dec_path.parent), "config": ident,
              "inference": {"landmark_passes": passes, "refine_2d": decoder.config.refine_2d}}
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    write_model_card(out, report)
    log_fh.close()
    return report


METRIC_ROWS = (("recall", "recall"), ("pck2d@0.05", "PCK2D@0.05"), ("pck2d@0.1", "PCK2D@0.1"),
               ("mean_err_2d_px", "2D error px"), ("pa_mpjpe_mm", "PA-MPJPE mm"), ("mpjpe_rr_mm", "wrist-aligned MPJPE mm"),
               ("root_depth_err_mm", "root depth error mm"), ("handedness_acc", "handedness"))


def before_after_table(before: dict, after: dict) -> str:
    """A markdown before/after table of the eval metrics present in either."""
    lines = ["| metric (held-out split) | before | after |", "|---|---|---|"]
    for key, label in METRIC_ROWS:
        b, a = before.get(key), after.get(key)
        if b is None and a is None:
            continue
        f = lambda v: "–" if v is None else (f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}")  # noqa: E731
        lines.append(f"| {label} | {f(b)} | {f(a)} |")
    return "\n".join(lines)


def write_model_card(out: Path, report: dict) -> None:
    """DIR/MODEL_CARD.md: the fine-tuning section (data, licence, steps, time, before/after), then the base card."""
    from handos.weights import WEIGHTS_DIR

    nets = ["decoder"] + [n for n, f in (("landmark net", LANDMARK_FILE), ("palm detector", PALM_FILE))
                          if report["steps_by_stage"].get("landmark" if f == LANDMARK_FILE else "palm")]
    text = [f"# {report['version']} — fine-tuned handos weights", "",
            "## Fine-tuning", "",
            f"- data: `{report['data']}` ({report['data_name']}){', grey images' if report['grayscale'] else ''}",
            f"- licence of the data: {report['licence'] or 'not given (pass --data-licence)'}; these weights are "
            "derived from that data and follow its terms",
            f"- split: {report['split']['train']} train / {report['split']['val']} held-out images "
            f"(seed {report['seed']}, val fraction {report['val_frac']})",
            f"- fine-tuned: {', '.join(nets)} (`--foundation {report['foundation']}`), starting from "
            f"`{report['base_weights']}`; steps {report['steps_by_stage']} = {report['steps']}",
            f"- time: {report['seconds']:.0f} s",
            f"- inference: {report['inference']['landmark_passes']} extra landmark pass(es) on the landmark ROI "
            f"(foundation_config.json), 2D joints reported from the "
            f"{'decoder' if report['inference']['refine_2d'] else 'landmark net'}", "",
            before_after_table(report["before"], report["after"]), "",
            "Metrics: `handos eval`'s (handos.eval) on the held-out images. Load with "
            "`handos.load(weights=DIR)` or `--weights DIR`.", ""]
    base = WEIGHTS_DIR / "MODEL_CARD.md"
    if base.exists():
        text += ["## The base model", "", base.read_text().split("\n", 1)[1]]
    (out / "MODEL_CARD.md").write_text("\n".join(text))


__all__ = ["FinetuneConfig", "FinetuneError", "finetune", "FOUNDATION_MODES", "REPORT_FILE", "evaluate_on",
           "save_graph", "before_after_table"]
