"""Scoring predictions against GT hands image by image, and the report of `handos eval` (design section 3.2).

GT 3D is in millimetres (derived_annotations.json); predictions are in metres (schema) and are
converted to millimetres here, once, in `PredHand.from_hand`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handos.eval import metrics
from handos.eval.matching import match_hands

PCK_ALPHAS = (0.05, 0.1)
AUC_RANGE_MM = (0.0, 50.0, 100)  # lo, hi, steps: the FreiHAND / DexYCB convention
F_THRESHOLDS_MM = (5.0, 15.0)


@dataclass
class GTHand:
    """One annotated hand: 2D px (NaN = unlabelled), 3D mm camera frame or None."""

    joints_2d: np.ndarray  # (21, 2)
    joints_3d: np.ndarray | None  # (21, 3) mm
    handedness: str | None
    vertices_3d: np.ndarray | None = None  # (V, 3) mm, when a set provides meshes

    @staticmethod
    def from_dict(d: dict[str, Any]) -> GTHand:
        """From a derived_annotations.json `hands[]` entry (null joints -> NaN)."""
        j2 = np.array([[np.nan, np.nan] if p is None else p for p in d["joints_2d"]], dtype=np.float64).reshape(21, 2)
        j3 = d.get("joints_3d")
        j3 = None if j3 is None else np.array([[np.nan] * 3 if p is None else p for p in j3], dtype=np.float64).reshape(21, 3)
        v = d.get("vertices_3d")
        return GTHand(j2, j3, d.get("handedness"), None if v is None else np.asarray(v, dtype=np.float64))


@dataclass
class PredHand:
    """One predicted hand in evaluation units: 2D px, 3D mm."""

    keypoints_2d: np.ndarray  # (21, 2) px
    joints_3d: np.ndarray | None  # (21, 3) mm
    handedness: str | None
    camera_frame: bool = True  # False: 3D is hand-centred (no absolute depth), e.g. MediaPipe world landmarks
    vertices_3d: np.ndarray | None = None  # (V, 3) mm

    @staticmethod
    def from_hand(hand: Any) -> PredHand:
        """From a handos.Hand (metres) or a schema `hands[]` dict (metres)."""
        get = hand.get if isinstance(hand, dict) else lambda k, default=None: getattr(hand, k, default)
        frame = get("joints_3d_frame", None) or "camera"
        j3 = get("joints_3d", None)
        v = get("vertices", None)
        return PredHand(
            keypoints_2d=np.asarray(get("keypoints_2d"), dtype=np.float64).reshape(21, 2),
            joints_3d=None if j3 is None else np.asarray(j3, dtype=np.float64).reshape(21, 3) * 1000.0,
            handedness=get("handedness", None),
            camera_frame=frame == "camera",
            vertices_3d=None if v is None else np.asarray(v, dtype=np.float64) * 1000.0,
        )


@dataclass
class EvalAccumulator:
    """Collects per-image matches and errors; `report()` turns them into the numbers of design 3.2."""

    images: int = 0
    gt_hands: int = 0
    predictions: int = 0
    matched: int = 0
    false_positives: int = 0
    labelled_joints: int = 0
    pck_hits: dict[float, int] = field(default_factory=lambda: {a: 0 for a in PCK_ALPHAS})
    err_2d: list[np.ndarray] = field(default_factory=list)  # per matched hand: (J,) px, NaN unlabelled
    gt_hands_3d: int = 0
    pa_joint_err: list[np.ndarray] = field(default_factory=list)  # per matched 3D hand: (21,) mm after PA
    rr_joint_err: list[np.ndarray] = field(default_factory=list)  # (21,) mm, wrist aligned
    root_depth: list[float] = field(default_factory=list)
    pa_mpvpe: list[float] = field(default_factory=list)
    f_scores: dict[float, list[float]] = field(default_factory=lambda: {t: [] for t in F_THRESHOLDS_MM})
    handed_pairs: list[tuple[str | None, str]] = field(default_factory=list)
    missed: list[dict] = field(default_factory=list)  # unmatched GT hands: {"file", "gt_hand"}
    false_positive_list: list[dict] = field(default_factory=list)  # unmatched predictions: {"file", "pred_hand"}

    def add_image(self, gt: Sequence[GTHand], pred: Sequence[PredHand], file: str | None = None) -> list[tuple[int, int]]:
        """Score one image; returns the matched (pred index, gt index) pairs."""
        self.images += 1
        self.gt_hands += len(gt)
        self.predictions += len(pred)
        self.gt_hands_3d += sum(g.joints_3d is not None for g in gt)
        gt2d = np.stack([g.joints_2d for g in gt]) if gt else np.zeros((0, 21, 2))
        pr2d = np.stack([p.keypoints_2d for p in pred]) if pred else np.zeros((0, 21, 2))
        m = match_hands(pr2d, gt2d)
        self.matched += len(m.pairs)
        self.false_positives += len(m.unmatched_pred)
        self.labelled_joints += int(np.isfinite(gt2d).all(-1).sum())
        self.missed.extend({"file": file, "gt_hand": int(g)} for g in m.unmatched_gt)
        self.false_positive_list.extend({"file": file, "pred_hand": int(p)} for p in m.unmatched_pred)
        if len(m.pairs) == 0:
            return []
        pi, gi = m.pairs[:, 0], m.pairs[:, 1]
        for a in PCK_ALPHAS:
            hits, _ = metrics.pck_2d_hits(pr2d[pi], gt2d[gi], a)
            self.pck_hits[a] += int(hits.sum())
        self.err_2d.extend(metrics.joint_errors_2d(pr2d[pi], gt2d[gi]))
        for p_i, g_i in zip(pi, gi):
            self._add_3d(gt[g_i], pred[p_i])
            if gt[g_i].handedness is not None:
                self.handed_pairs.append((pred[p_i].handedness, gt[g_i].handedness))
        return [(int(a), int(b)) for a, b in m.pairs]

    def _add_3d(self, g: GTHand, p: PredHand) -> None:
        """3D errors of one matched pair (when both sides have 3D)."""
        if g.joints_3d is None or p.joints_3d is None:
            return
        gj, pj = g.joints_3d, p.joints_3d
        s, r, t = metrics.similarity_transform(pj, gj)
        self.pa_joint_err.append(metrics.per_joint_errors(metrics.apply_similarity(pj, s, r, t), gj))
        self.rr_joint_err.append(metrics.per_joint_errors(pj - pj[:1], gj - gj[:1]))
        if p.camera_frame:
            self.root_depth.append(float(metrics.root_depth_error(pj, gj)))
        if g.vertices_3d is not None and p.vertices_3d is not None:
            if len(g.vertices_3d) == len(p.vertices_3d):
                self.pa_mpvpe.append(float(metrics.pa_mpvpe(p.vertices_3d, g.vertices_3d)))
            aligned = metrics.apply_similarity(p.vertices_3d, s, r, t)  # the joints' transform: any topology
            for thr in F_THRESHOLDS_MM:
                self.f_scores[thr].append(float(metrics.f_score(aligned, g.vertices_3d, thr)[0]))

    def report(self) -> dict[str, Any]:
        """The metrics of design 3.2 (None where there is nothing to measure) and the counts behind them."""
        n_lab = max(1, self.labelled_joints)
        err2d = np.stack(self.err_2d) if self.err_2d else np.zeros((0, 21))
        pa = np.stack(self.pa_joint_err) if self.pa_joint_err else np.zeros((0, 21))
        rr = np.stack(self.rr_joint_err) if self.rr_joint_err else np.zeros((0, 21))
        lo, hi, steps = AUC_RANGE_MM
        out: dict[str, Any] = {
            "recall": _num(self.matched / self.gt_hands if self.gt_hands else None),
            "false_positives": self.false_positives,
            "pck2d@0.05": _num(self.pck_hits[0.05] / n_lab if self.labelled_joints else None),
            "pck2d@0.1": _num(self.pck_hits[0.1] / n_lab if self.labelled_joints else None),
            "mean_err_2d_px": _num(_mean_of_hands(err2d)),
            "pa_mpjpe_mm": _num(_mean_of_hands(pa)),
            "mpjpe_rr_mm": _num(_mean_of_hands(rr)),
            "root_depth_err_mm": _num(np.mean(self.root_depth) if self.root_depth else None),
            "handedness_acc": _num(
                metrics.handedness_accuracy([p for p, _ in self.handed_pairs], [g for _, g in self.handed_pairs])
                if self.handed_pairs
                else None
            ),
            "auc3d_pa_0_50mm": _num(metrics.auc(pa, lo, hi, steps) if len(pa) else None),
            "auc3d_rr_0_50mm": _num(metrics.auc(rr, lo, hi, steps) if len(rr) else None),
            "pck3d_pa@20mm": _num(metrics.pck_3d(pa, 20.0) if len(pa) else None),
            "pa_mpvpe_mm": _num(np.mean(self.pa_mpvpe) if self.pa_mpvpe else None),
            "f@5mm": _num(np.mean(self.f_scores[5.0]) if self.f_scores[5.0] else None),
            "f@15mm": _num(np.mean(self.f_scores[15.0]) if self.f_scores[15.0] else None),
            "counts": {
                "images": self.images,
                "gt_hands": self.gt_hands,
                "predictions": self.predictions,
                "matched": self.matched,
                "labelled_joints_2d": self.labelled_joints,
                "gt_hands_3d": self.gt_hands_3d,
                "matched_3d": len(self.pa_joint_err),
                "root_depth_hands": len(self.root_depth),
                "handedness_labelled_matched": len(self.handed_pairs),
            },
            "missed_hands": self.missed,
            "false_positive_hands": self.false_positive_list,
        }
        return out


def _mean_of_hands(per_joint: np.ndarray) -> float | None:
    """Mean over hands of each hand's mean joint error (NaN joints skipped); None if no hand."""
    if len(per_joint) == 0:
        return None
    return float(np.nanmean(np.nanmean(per_joint, axis=1)))


def _num(x: Any, digits: int = 4) -> float | None:
    """A JSON-friendly rounded float, or None for missing/NaN."""
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else round(x, digits)


REPORT_ROWS: tuple[tuple[str, str], ...] = (
    ("recall", "recall"),
    ("false_positives", "false positives"),
    ("pck2d@0.05", "PCK2D@0.05"),
    ("pck2d@0.1", "PCK2D@0.1"),
    ("mean_err_2d_px", "mean 2D err (px)"),
    ("pa_mpjpe_mm", "PA-MPJPE (mm)"),
    ("mpjpe_rr_mm", "root-rel. MPJPE (mm)"),
    ("root_depth_err_mm", "root depth err (mm)"),
    ("handedness_acc", "handedness acc"),
    ("auc3d_pa_0_50mm", "3D AUC PA 0-50mm"),
    ("auc3d_rr_0_50mm", "3D AUC RR 0-50mm"),
    ("pa_mpvpe_mm", "PA-MPVPE (mm)"),
    ("f@5mm", "F@5mm"),
    ("f@15mm", "F@15mm"),
)


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable table of a report (metrics that could not be measured show as '-')."""
    lines = []
    title = report.get("dataset") or report.get("annotations")
    if title:
        lines.append(f"handos eval: {title}  (model {report.get('model', '?')})")
    for key, label in REPORT_ROWS:
        v = report.get(key)
        lines.append(f"  {label:<22} {'-' if v is None else v}")
    c = report.get("counts", {})
    lines.append(
        "  counts: "
        + ", ".join(f"{k}={v}" for k, v in c.items())
    )
    return "\n".join(lines)


TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("recall", "recall"),
    ("false_positives", "false pos."),
    ("pck2d@0.05", "PCK2D@0.05"),
    ("pck2d@0.1", "PCK2D@0.1"),
    ("mean_err_2d_px", "mean 2D err px"),
    ("pa_mpjpe_mm", "PA-MPJPE mm"),
    ("mpjpe_rr_mm", "root-rel. MPJPE mm"),
    ("root_depth_err_mm", "root depth mm"),
    ("handedness_acc", "handedness"),
)


def markdown_table(reports: dict[str, dict[str, Any]], digits: int = 3) -> str:
    """Reports (name -> report dict) as one Markdown table in BASELINES.md's column order."""
    head = "| set | images / hands | " + " | ".join(label for _, label in TABLE_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(TABLE_COLUMNS) + 2)]
    for name, rep in reports.items():
        c = rep.get("counts", {})
        cells = []
        for key, _ in TABLE_COLUMNS:
            v = rep.get(key)
            cells.append("–" if v is None else (str(v) if isinstance(v, int) else f"{v:.{digits}f}"))
        lines.append(f"| {name} | {c.get('images', '?')} / {c.get('gt_hands', '?')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
