"""Hand tracking through a clip: ROI carry-over between frames, stable track ids, handedness voting.

Policy (what runs on which frame):
- frame 0, and any frame right after a track was lost, and every `detect_every` frames while fewer than
  `max_hands` hands are tracked: the palm detector runs (plus the landmark net on the carried ROIs);
- a frame where a carried ROI loses its hand (fast motion, blur) is run again at once with the detector
  (`redetect_on_loss`), so a hand the detector can still see is not dropped for a frame;
- every other frame: only the landmark net runs, on the ROIs carried from the previous frame's landmarks
  (`Hand.trace.roi`), which is what makes clips fast.
Ids: a hand found from a carried ROI keeps that ROI's track (`trace.roi_index`); every other hand is
associated to live tracks by the Hungarian method on box IoU and keypoint distance; unmatched hands
open new tracks (ids count up from 0 and are never reused within a clip); a track unseen for more than
`max_missed` frames is closed.
Handedness: each track keeps a decayed mean of P(right) over its frames and flips only when that mean
crosses 0.5 by a `handedness_margin`, so a single odd frame never flips the label. The raw per-frame
label stays in `trace.handedness_raw` (not serialised).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from handos.geometry import box_iou
from handos.io.schema import Hand


@dataclass(frozen=True)
class TrackerConfig:
    """How tracks are kept and when the detector runs."""

    max_hands: int = 2
    detect_every: int = 10  # frames between detector runs while fewer than max_hands hands are tracked
    max_missed: int = 5  # frames a track may go unseen before it is closed
    redetect_on_loss: bool = True  # a carried ROI that loses its hand triggers the detector on the same frame
    min_match: float = 0.1  # association needs IoU >= this or keypoint distance <= (1 - this) * match_reach
    match_reach: float = 2.0  # hand sizes: keypoint distance at which the keypoint similarity reaches 0
    duplicate_iou: float = 0.5  # two hands of one frame overlapping more than this are one hand
    handedness_decay: float = 0.98  # per-frame decay of the handedness vote (memory of ~50 frames)
    handedness_margin: float = 0.2  # the voted mean must pass 0.5 +- margin to flip a track's label


@dataclass
class Track:
    """One hand followed through the clip."""

    id: int
    last: Hand  # the latest raw hand of this track
    last_frame: int
    first_frame: int
    hits: int = 1
    vote_right: float = 0.0  # decayed sum of P(right)
    vote_weight: float = 0.0  # decayed count
    label: str | None = None  # voted handedness

    @property
    def roi(self) -> np.ndarray | None:
        """The ROI for the next frame, as the model left it on the latest hand."""
        roi = self.last.trace.roi
        return None if roi is None else np.asarray(roi, dtype=np.float64).reshape(5)


def keypoint_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean keypoint distance between (N,21,2) and (M,21,2) hands, in sizes of the b hands -> (N,M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 21, 2), np.asarray(b, np.float64).reshape(-1, 21, 2)
    d = np.linalg.norm(a[:, None] - b[None], axis=-1).mean(-1)  # (N, M) px
    size = np.maximum((b.max(1) - b.min(1)).max(-1), 8.0)  # (M,)
    return d / size[None, :]


def similarity(hands: Sequence[Hand], refs: Sequence[Hand], reach: float = 2.0) -> np.ndarray:
    """(N,M) association score in [0,1]: max of box IoU and 1 - keypoint distance / (reach hand sizes)."""
    if not hands or not refs:
        return np.zeros((len(hands), len(refs)))
    iou = box_iou(np.stack([h.bbox_xyxy for h in hands]), np.stack([r.bbox_xyxy for r in refs]))
    kd = keypoint_distance(np.stack([h.keypoints_2d for h in hands]), np.stack([r.keypoints_2d for r in refs]))
    return np.maximum(iou, np.clip(1.0 - kd / reach, 0.0, 1.0))


def _assign(score: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """Maximum-score one-to-one matching (Hungarian) keeping pairs with score >= min_score."""
    if score.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-score)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if score[r, c] >= min_score]


def _p_right(h: Hand) -> float:
    """P(right hand) from a hand's label and its confidence."""
    s = float(np.clip(h.handedness_score, 0.0, 1.0))
    return s if h.handedness == "right" else 1.0 - s


class Tracks:
    """Pure track bookkeeping: give each frame's hands stable ids and voted handedness."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        """No tracks yet."""
        self.cfg = config or TrackerConfig()
        self.tracks: dict[int, Track] = {}
        self.next_id = 0
        self.lost_since_detect = False
        self.frame = -1
        self.last_detect_frame = -10**9
        self.closed: list[Track] = []

    # -------------------------------------------------------------- what the next frame needs
    def carried(self) -> list[Track]:
        """Tracks seen on the latest frame that carry a ROI into the next one (at most max_hands)."""
        live = [t for t in self.tracks.values() if t.last_frame == self.frame and t.roi is not None]
        live.sort(key=lambda t: -t.last.score)
        return live[: self.cfg.max_hands]

    def needs_detection(self, frame: int) -> bool:
        """Whether the palm detector should run on `frame` (see the module's policy)."""
        if frame == 0 or not self.tracks or self.lost_since_detect:
            return True
        if len(self.carried()) >= self.cfg.max_hands:
            return False
        return frame - self.last_detect_frame >= self.cfg.detect_every

    def seed(self, hands: list[Hand], frame: int) -> None:
        """Start from hands of an earlier run (resuming): their track ids live on; the next frame detects."""
        for h in hands:
            if h.track_id is None:
                continue
            tr = Track(id=int(h.track_id), last=h, last_frame=frame, first_frame=frame)
            tr.label = h.handedness
            tr.vote_right, tr.vote_weight = _p_right(h), 1.0
            self.tracks[tr.id] = tr
        self.next_id = max([self.next_id] + [t + 1 for t in self.tracks])
        self.frame = frame
        self.lost_since_detect = True

    # -------------------------------------------------------------- the update
    def update(self, hands: list[Hand], frame: int, detected: bool = True,
               carried_ids: Sequence[int] | None = None) -> list[Hand]:
        """Assign track ids to one frame's raw hands; returns copies with track_id, id and voted handedness."""
        self.frame = frame
        if detected:
            self.last_detect_frame = frame
            self.lost_since_detect = False
        hands = self._dedupe(list(hands))
        assigned: dict[int, int] = {}  # hand index -> track id
        # 1. hands that came from a carried ROI keep that ROI's track
        if carried_ids is not None:
            for i, h in enumerate(hands):
                ri = h.trace.roi_index
                if ri is not None and 0 <= int(ri) < len(carried_ids) and carried_ids[int(ri)] in self.tracks:
                    tid = carried_ids[int(ri)]
                    if tid not in assigned.values():
                        assigned[i] = tid
        # 2. the rest: Hungarian against live tracks not yet taken
        rest = [i for i in range(len(hands)) if i not in assigned]
        free = [t for t in self.tracks.values() if t.id not in assigned.values()]
        pairs = _assign(similarity([hands[i] for i in rest], [t.last for t in free], self.cfg.match_reach), self.cfg.min_match)
        for r, c in pairs:
            assigned[rest[r]] = free[c].id
        # 3. new tracks for what is left, strongest first, while there is room
        order = sorted((i for i in range(len(hands)) if i not in assigned), key=lambda i: -hands[i].score)
        n_live = len(set(assigned.values()))
        for i in order:
            if n_live >= self.cfg.max_hands:
                break
            assigned[i] = self._new_track(hands[i], frame).id
            n_live += 1
        # 4. write back, vote handedness
        out: list[Hand] = []
        for i, h in enumerate(hands):
            tid = assigned.get(i)
            if tid is None:
                continue
            tr = self.tracks[tid]
            if tr.last_frame != frame:
                tr.hits += 1
            tr.last, tr.last_frame = h, frame
            out.append(self._vote(tr, h))
        # 5. close tracks unseen for too long; a track lost right now asks for a detection next frame
        seen = set(assigned.values())
        for tid in list(self.tracks):
            tr = self.tracks[tid]
            if tid not in seen and tr.last_frame == frame - 1:
                self.lost_since_detect = True
            if frame - tr.last_frame > self.cfg.max_missed:
                self.closed.append(self.tracks.pop(tid))
        out.sort(key=lambda h: h.track_id)
        for k, h in enumerate(out):
            h.id = k
        return out

    def _new_track(self, h: Hand, frame: int) -> Track:
        """Open a track for a hand."""
        tr = Track(id=self.next_id, last=h, last_frame=frame, first_frame=frame)
        self.tracks[tr.id] = tr
        self.next_id += 1
        return tr

    def _dedupe(self, hands: list[Hand]) -> list[Hand]:
        """Drop hands of one frame that duplicate a stronger one (a ROI hand beats a fresh detection)."""
        if len(hands) < 2:
            return hands
        rank = sorted(range(len(hands)), key=lambda i: (hands[i].trace.roi_index is None, -hands[i].score))
        iou = box_iou(np.stack([h.bbox_xyxy for h in hands]), np.stack([h.bbox_xyxy for h in hands]))
        kd = keypoint_distance(np.stack([h.keypoints_2d for h in hands]), np.stack([h.keypoints_2d for h in hands]))
        keep: list[int] = []
        for i in rank:
            if all(iou[i, j] <= self.cfg.duplicate_iou and kd[i, j] > 0.15 for j in keep):
                keep.append(i)
        return [hands[i] for i in sorted(keep)]

    def _vote(self, tr: Track, h: Hand) -> Hand:
        """A copy of `h` with the track id and the track's voted handedness."""
        d = self.cfg.handedness_decay
        tr.vote_right = d * tr.vote_right + _p_right(h)
        tr.vote_weight = d * tr.vote_weight + 1.0
        p = tr.vote_right / tr.vote_weight
        if tr.label is None:
            tr.label = "right" if p >= 0.5 else "left"
        elif tr.label == "right" and p < 0.5 - self.cfg.handedness_margin:
            tr.label = "left"
        elif tr.label == "left" and p > 0.5 + self.cfg.handedness_margin:
            tr.label = "right"
        score = p if tr.label == "right" else 1.0 - p
        trace = replace(h.trace, handedness_raw=(h.handedness, float(h.handedness_score)))
        return replace(h, track_id=tr.id, handedness=tr.label, handedness_score=float(max(score, 0.5)), trace=trace)

    def all_tracks(self) -> list[Track]:
        """Every track opened so far (closed and live), by id."""
        return sorted(self.closed + list(self.tracks.values()), key=lambda t: t.id)


# ------------------------------------------------------------------ driving the model
@dataclass
class TrackStats:
    """What the tracker ran."""

    frames: int = 0
    detector_frames: int = 0  # frames where the palm detector ran
    roi_frames: int = 0  # frames served from carried ROIs only
    model_calls: int = 0
    seconds_model: float = 0.0
    per_frame: list[dict[str, Any]] = field(default_factory=list)


class HandTracker:
    """Run the model frame by frame, carrying ROIs and keeping ids (see the module's policy)."""

    def __init__(self, model, config: TrackerConfig | None = None, camera=None, use_rois: bool = True) -> None:
        """`model` is a HandOS (predict_frames for ROI tracking, else predict_batch on every frame)."""
        self.model = model
        self.cfg = config or TrackerConfig()
        self.camera = camera
        self.tracks = Tracks(self.cfg)
        self.use_rois = use_rois and hasattr(model, "predict_frames")
        self.stats = TrackStats()

    def step(self, rgb: np.ndarray, frame: int) -> list[Hand]:
        """Hands of one frame with track ids (raw, not smoothed)."""
        import time

        detect = self.tracks.needs_detection(frame)
        carried = self.tracks.carried() if self.use_rois else []
        t0 = time.perf_counter()
        if self.use_rois:
            # The foundation runs its palm detector on a frame iff fewer ROIs are carried than max_hands, so
            # a ROI-only frame asks for exactly len(carried) hands and a detection frame for cfg.max_hands.
            rois = np.stack([t.roi for t in carried]).astype(np.float32) if carried else None
            detect = detect or rois is None
            k = self.cfg.max_hands if detect else len(carried)
            hands = self.model.predict_frames([rgb], [self.camera], rois=[rois], max_hands=k)[0]
            if not detect and self.cfg.redetect_on_loss and len(hands) < len(carried):
                # a hand slipped out of its ROI (fast motion, blur): look for it on this same frame
                kept = sorted({h.trace.roi_index for h in hands} - {None})
                again = rois[kept] if kept else None
                hands = self.model.predict_frames([rgb], [self.camera], rois=[again], max_hands=self.cfg.max_hands)[0]
                for h in hands:  # roi_index now points into `again`; map it back to `rois`
                    if h.trace.roi_index is not None:
                        h.trace = replace(h.trace, roi_index=kept[int(h.trace.roi_index)])
                self.stats.model_calls += 1
                detect = True
        else:
            hands = self.model.predict_batch([rgb], [self.camera])[0]
            detect = True
        self.stats.seconds_model += time.perf_counter() - t0
        self.stats.model_calls += 1
        self.stats.frames += 1
        self.stats.detector_frames += int(detect)
        self.stats.roi_frames += int(not detect)
        return self.tracks.update(hands, frame, detected=detect, carried_ids=[t.id for t in carried])


def track_frames(model, frames: Iterable, camera=None, config: TrackerConfig | None = None,
                 smoother=None) -> Iterator[tuple[Any, list[Hand], list[Hand]]]:
    """Yield (frame, raw tracked hands, smoothed hands) for each frame of an iterable of reader Frames."""
    tracker = HandTracker(model, config, camera)
    for fr in frames:
        raw = tracker.step(fr.rgb, fr.index)
        smooth = smoother(raw, fr.time_s) if smoother is not None else raw
        if smoother is not None:
            smoother.drop(set(tracker.tracks.tracks))
        yield fr, raw, smooth

