"""Quality check of a decoder on a real set with 3D ground truth (e.g. ge2019_realworld).

The decoder's evidence comes either from a MediaPipe dump (measure_errors.py `dump`, the same
network as the foundation) or from handos.foundation. Metrics are those of `handos eval` on matched hands:
PA-MPJPE, root-aligned MPJPE, root depth error, PCK2D, handedness; MediaPipe's world landmarks are
scored alongside as the baseline.

  python -m handos.train.realcheck --set $HANDOS_REALDATA/ge2019_realworld \
      --dump runs/mediapipe_dump.json [--weights handos/weights] [--foundation]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from handos.geometry import procrustes_align
from handos.hand.skeleton import NUM_JOINTS
from handos.model.decoder import DecoderInput, load_decoder


def _match(gt2d: list[np.ndarray], det2d: list[np.ndarray]) -> list[tuple[int, int]]:
    """Hungarian match on mean 2D joint distance, gated at 0.5 x the GT joint box's max side."""
    from scipy.optimize import linear_sum_assignment

    if not gt2d or not det2d:
        return []
    cost = np.array([[np.linalg.norm(g - d, axis=-1).mean() for d in det2d] for g in gt2d])
    rows, cols = linear_sum_assignment(cost)
    return [(i, j) for i, j in zip(rows, cols) if cost[i, j] < 0.5 * (gt2d[i].max(0) - gt2d[i].min(0)).max()]


def evidence_from_dump(set_dir: Path, dump_rows: list[dict]) -> tuple[list[dict], DecoderInput]:
    """Per-detection records + DecoderInput built from MediaPipe's dumped landmarks (conf = 1)."""
    ann = json.loads((set_dir / "derived_annotations.json").read_text())
    by_file = {im["file"]: im for im in ann["images"]}
    recs, j2d, jz, world, cams = [], [], [], [], []
    for row in dump_rows:
        im = by_file[row["file"]]
        cam = im.get("camera")
        if cam is None:
            continue
        for k, det in enumerate(row["hands"]):
            lm = np.array(det["landmarks_px"])
            recs.append({"file": row["file"], "det": k, "mp_world": np.array(det["world_m"])})
            j2d.append(lm[:, :2])
            jz.append(lm[:, 2])
            world.append(det["world_m"])
            cams.append([cam["fx"], cam["fy"], cam["cx"], cam["cy"]])
    t = lambda a: torch.tensor(np.array(a), dtype=torch.float32)  # noqa: E731
    n = len(recs)
    inp = DecoderInput(joints_2d=t(j2d).reshape(n, NUM_JOINTS, 2), joints_z=t(jz).reshape(n, NUM_JOINTS),
                       joint_conf=torch.ones(n, NUM_JOINTS), camera=t(cams).reshape(n, 4),
                       world=t(world).reshape(n, NUM_JOINTS, 3))
    return recs, inp


def evaluate(set_dir: Path, recs: list[dict], out, inp: DecoderInput, limit: int | None = None) -> dict:
    """Metrics of decoder outputs (and MediaPipe's own landmarks) against the set's ground truth."""
    ann = json.loads((set_dir / "derived_annotations.json").read_text())
    by_file: dict[str, list[int]] = {}
    for i, r in enumerate(recs):
        by_file.setdefault(r["file"], []).append(i)
    bias: list[float] = []
    pa, pa_mp, rr, rr_mp, depth, hand_ok, pck05, pck05_mp, err2d = [], [], [], [], [], [], [], [], []
    n_gt = n_joints = 0
    for im in [im for im in ann["images"] if im.get("camera")][:limit]:
        dets = by_file.get(im["file"], [])
        gts = [h for h in im["hands"] if h.get("joints_3d") is not None]
        n_gt += len(gts)
        n_joints += NUM_JOINTS * len(gts)
        pairs = _match([np.array(h["joints_2d"]) for h in gts], [out.joints_2d[i].numpy() for i in dets])
        for gi, dj in pairs:
            i = dets[dj]
            g3 = torch.tensor(gts[gi]["joints_3d"], dtype=torch.float32)[None] / 1000.0
            g2 = np.array(gts[gi]["joints_2d"])
            side = (g2.max(0) - g2.min(0)).max()
            p3 = out.joints_3d[i:i + 1] + out.cam_t[i:i + 1, None]
            mpw = torch.tensor(recs[i]["mp_world"], dtype=torch.float32)[None]
            pa.append(float((procrustes_align(p3, g3) - g3).norm(dim=-1).mean()) * 1000)
            pa_mp.append(float((procrustes_align(mpw, g3) - g3).norm(dim=-1).mean()) * 1000)
            rr.append(float(((p3 - p3[:, :1]) - (g3 - g3[:, :1])).norm(dim=-1).mean()) * 1000)
            rr_mp.append(float(((mpw - mpw[:, :1]) - (g3 - g3[:, :1])).norm(dim=-1).mean()) * 1000)
            depth.append(abs(float(p3[0, 0, 2] - g3[0, 0, 2])) * 1000)
            bias.append(float(p3[0, 0, 2] - g3[0, 0, 2]) * 1000)
            hand_ok.append(bool(out.is_left[i]) == (gts[gi]["handedness"] == "left"))
            d = np.linalg.norm(out.joints_2d[i].numpy() - g2, axis=-1)
            d_mp = np.linalg.norm(inp.joints_2d[i].numpy() - g2, axis=-1)
            pck05.append(int((d < 0.05 * side).sum()))
            pck05_mp.append(int((d_mp < 0.05 * side).sum()))
            err2d.append(float(d.mean()))
    m = lambda a: float(np.mean(a)) if a else float("nan")  # noqa: E731
    return {"gt_hands": n_gt, "matched": len(pa), "pa_mpjpe_mm": m(pa), "mpjpe_rr_mm": m(rr),
            "root_depth_err_mm": m(depth), "root_depth_bias_mm": m(bias), "root_depth_err_median_mm": float(np.median(depth)) if depth else float("nan"),
            "handedness_acc": m(hand_ok), "pck2d@0.05": sum(pck05) / max(n_joints, 1),
            "mean_err_2d_px": m(err2d),
            "mediapipe": {"pa_mpjpe_mm": m(pa_mp), "mpjpe_rr_mm": m(rr_mp), "pck2d@0.05": sum(pck05_mp) / max(n_joints, 1)}}


def evidence_from_foundation(set_dir: Path, device: str = "cpu", limit: int | None = None) -> tuple[list[dict], DecoderInput]:
    """Run handos.foundation on the set's images; DecoderInput for every detected hand."""
    from handos.foundation import Foundation
    from handos.io.images import load_image
    from handos.model.decoder import decoder_inputs_from_foundation

    ann = json.loads((set_dir / "derived_annotations.json").read_text())
    images = [im for im in ann["images"] if im.get("camera")][:limit]
    found = Foundation.load(device)
    fouts, recs, cams = [], [], []
    for im in images:
        rgb = load_image(str(set_dir / im["file"])).rgb
        fo = found.detect([rgb], max_hands=2)
        c = im["camera"]
        for k in range(len(fo.score)):
            recs.append({"file": im["file"], "det": k, "mp_world": fo.world[k].cpu().numpy()})
            cams.append([c["fx"], c["fy"], c["cx"], c["cy"]])
        fouts.append(fo)
    fields = ["joints_2d", "joints_z", "presence", "world", "roi"]
    merged = type("F", (), {f: torch.cat([torch.as_tensor(getattr(fo, f)).float().cpu() for fo in fouts]) for f in fields})
    return recs, decoder_inputs_from_foundation(merged, torch.tensor(cams, dtype=torch.float32))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description="decoder quality on a real set with 3D ground truth")
    ap.add_argument("--set", type=Path, required=True, help="a real set's folder (holding derived_annotations.json)")
    ap.add_argument("--dump", type=Path, default=Path("runs/mediapipe_dump.json"))
    ap.add_argument("--weights", default=None, help="decoder .safetensors or folder (default: shipped)")
    ap.add_argument("--foundation", action="store_true", help="use handos.foundation instead of the dump")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    dec = load_decoder(args.weights)
    if args.foundation:
        recs, inp = evidence_from_foundation(args.set, limit=args.limit)
    else:
        rows = json.loads(args.dump.read_text())[args.set.name][:args.limit]
        recs, inp = evidence_from_dump(args.set, rows)
    with torch.no_grad():
        out = dec(inp)
    res = evaluate(args.set, recs, out, inp, limit=args.limit)
    res["evidence"] = "handos.foundation" if args.foundation else "MediaPipe 0.10.21 dump"
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
