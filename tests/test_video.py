"""Clips without the model: reader validation, writer, One-Euro smoothing, tracking logic (a blob-finding test double)."""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest

from handos.errors import InputError
from handos.geometry import box_iou
from handos.io.schema import Hand, HandTrace, validate_record
from handos.video.clip import JitterMeter, jitter_px, process_clip, select_keyframes
from handos.video.reader import ClipReader, is_clip
from handos.video.smoothing import HandSmoother, OneEuroConfig
from handos.video.tracker import TrackerConfig, Tracks
from handos.video.writer import VideoWriter

W, H = 160, 120
COLORS = {"right": (230, 40, 40), "left": (40, 40, 230)}  # blob colour -> the hand it stands for
RING = np.stack([np.cos(np.linspace(0, 2 * np.pi, 21, endpoint=False)),
                 np.sin(np.linspace(0, 2 * np.pi, 21, endpoint=False))], -1)  # (21, 2) keypoint layout


def make_hand(center, radius=10.0, handedness="right", score=0.9, hscore=0.9, noise=0.0, rng=None, roi_index=None) -> Hand:
    """A Hand whose 21 keypoints sit on a ring around `center` (plus optional pixel noise)."""
    kp = np.asarray(center, np.float64) + radius * RING
    if noise:
        kp = kp + (rng or np.random.default_rng(0)).normal(0, noise, kp.shape)
    j3 = np.concatenate([(kp - [W / 2, H / 2]) / 500.0, np.full((21, 1), 0.5)], -1)  # (21, 3) metres
    trace = HandTrace(roi=np.array([*center, 3 * radius, 3 * radius, 0.0]))
    if roi_index is not None:
        trace = replace(trace, roi_index=roi_index)
    return Hand(id=0, score=score, handedness=handedness, handedness_score=hscore,
                bbox_xyxy=np.concatenate([kp.min(0), kp.max(0)]), keypoints_2d=kp, keypoints_score=np.ones(21),
                joints_3d=j3, cam_t=j3[0].copy(), vertices=None, trace=trace)


def blob_frame(centers: dict[str, tuple[float, float] | None], radius=10) -> np.ndarray:
    """A grey frame with a coloured disc per visible hand."""
    img = np.full((H, W, 3), 128, np.uint8)
    yy, xx = np.mgrid[:H, :W]
    for name, c in centers.items():
        if c is not None:
            img[(xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= radius ** 2] = COLORS[name]
    return img


class BlobModel:
    """Test double of HandOS.predict_frames: finds coloured discs; noisy keypoints; sometimes wrong handedness."""

    version = "blob-test"

    def __init__(self, noise=1.5, flip_every=7, seed=0):
        """`flip_every`: every n-th call reports the wrong handedness with low confidence."""
        self.rng = np.random.default_rng(seed)
        self.noise, self.flip_every = noise, flip_every
        self.calls = []  # (n_rois, detect) per call

    def _find(self, rgb):
        """(name, centre) of each visible disc, in a shuffled order."""
        found = []
        for name, col in COLORS.items():
            mask = np.all(np.abs(rgb.astype(int) - col) < 40, axis=-1)
            if mask.sum() > 20:
                yy, xx = np.nonzero(mask)
                found.append((name, (xx.mean(), yy.mean())))
        self.rng.shuffle(found)
        return found

    def predict_frames(self, rgbs, cameras=None, rois=None, detect=None, max_hands=2):
        """Per frame: ROI hands (a disc inside a carried ROI) and, when detecting, every disc."""
        out = []
        for i, rgb in enumerate(rgbs):
            r = None if rois is None else rois[i]
            det = r is None or len(r) < max_hands  # as the foundation: the palm detector runs iff ROIs are missing
            self.calls.append((0 if r is None else len(r), det))
            hands, used = [], set()
            for name, c in self._find(rgb):
                roi_index = None
                if r is not None:
                    for k, roi in enumerate(np.asarray(r)):
                        if abs(c[0] - roi[0]) < roi[2] / 2 and abs(c[1] - roi[1]) < roi[3] / 2 and k not in used:
                            roi_index = k
                            used.add(k)
                            break
                if roi_index is None and not det:
                    continue
                n = len(self.calls)
                wrong = self.flip_every and n % self.flip_every == 0
                hd = ({"right": "left", "left": "right"}[name], 0.6) if wrong else (name, 0.9)
                hands.append(make_hand(c, handedness=hd[0], hscore=hd[1], noise=self.noise, rng=self.rng,
                                       roi_index=roi_index))
            out.append(hands[:max_hands])
        return out

    def predict_batch(self, rgbs, cameras=None):
        """Detection on every frame."""
        return self.predict_frames(rgbs, cameras)


def write_clip(path, frames, fps=30.0):
    """Write frames with the project's writer."""
    with VideoWriter(path, fps=fps) as w:
        for f in frames:
            w.write(f)
    return path


def trajectory(n):
    """Two discs: right moves left->right, left moves right->left (they cross mid-clip, at different heights)."""
    return [{"right": (20 + 120 * t / (n - 1), 40.0), "left": (140 - 120 * t / (n - 1), 85.0)} for t in range(n)]


@pytest.fixture(scope="module")
def two_blob_clip(tmp_path_factory):
    """A 40-frame 160x120 H.264 clip with two moving discs, and their true centres."""
    traj = trajectory(40)
    path = tmp_path_factory.mktemp("clips") / "two.mp4"
    return write_clip(path, [blob_frame(c) for c in traj]), traj


# ------------------------------------------------------------------ reader / writer
def test_writer_makes_browser_h264(tmp_path):
    """libx264, yuv420p, even sizes (odd input padded), frame count and times kept."""
    frames = [np.full((H + 1, W + 1, 3), i * 10, np.uint8) for i in range(12)]
    path = write_clip(tmp_path / "odd.mp4", frames, fps=25)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert (s.width % 2, s.height % 2) == (0, 0) and (s.width, s.height) == (W + 2, H + 2)
    frames_back = list(ClipReader(path))
    assert len(frames_back) == 12
    assert np.allclose([f.time_s for f in frames_back], np.arange(12) / 25, atol=1e-3)
    assert abs(float(frames_back[5].rgb.mean()) - 50) < 3  # content survives encoding


def test_reader_streams_and_limits(two_blob_clip):
    """Frames stream one by one; --limit stops early and says so."""
    path, traj = two_blob_clip
    r = ClipReader(path, limit=7)
    got = [f.index for f in r]
    assert got == list(range(7)) and r.stats.truncated
    assert is_clip(path) and is_clip("x.MOV") and not is_clip("x.jpg")


@pytest.mark.parametrize("kind,match", [
    ("missing", "no such file"), ("empty", "empty"), ("text", "not a readable video"),
    ("audio", "no video stream"), ("noframes", "no decodable video frames"),
])
def test_reader_rejects_bad_files(tmp_path, kind, match):
    """Each unusable file gives a one-line InputError naming the problem."""
    p = tmp_path / "bad.mp4"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not a video\n" * 50)
    elif kind == "audio":
        p = tmp_path / "bad.m4a"
        with av.open(str(p), "w", format="mp4") as c:
            s = c.add_stream("aac", rate=16000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for pk in s.encode(frame):
                c.mux(pk)
            for pk in s.encode(None):
                c.mux(pk)
    elif kind == "noframes":  # a valid AVI header with a video stream and no frames
        p = tmp_path / "bad.avi"
        c = av.open(str(p), "w")
        s = c.add_stream("mjpeg", rate=30)
        s.width, s.height, s.pix_fmt = 64, 64, "yuvj420p"
        c.start_encoding()
        c.close()
    with pytest.raises(InputError, match=match) as err:
        list(ClipReader(p))
    assert "\n" not in str(err.value)


def test_reader_refuses_long_clips_and_bad_fps(tmp_path):
    """Duration over the limit is refused up front; a nonsense --fps is refused."""
    path = write_clip(tmp_path / "long.mp4", [blob_frame({}) for _ in range(30)], fps=10)  # 3 s
    with pytest.raises(InputError, match="over the .* limit.*--max-seconds"):
        ClipReader(path, max_seconds=1.0)
    assert len(list(ClipReader(path, max_seconds=5.0))) == 30
    with pytest.raises(InputError, match="fps"):
        ClipReader(path, fps=-3)
    frames = list(ClipReader(path, fps=5))  # override: times = index / fps
    assert frames[10].time_s == pytest.approx(2.0)


def test_reader_variable_frame_rate_uses_timestamps(tmp_path):
    """Irregular frame times survive writing and reading (no assumed constant rate)."""
    times = [0.0, 0.03, 0.1, 0.12, 0.3, 0.31, 0.5]
    path = tmp_path / "vfr.mp4"
    with VideoWriter(path, fps=30) as w:
        for t in times:
            w.write(blob_frame({}), t)
    got = [f.time_s for f in ClipReader(path)]
    assert np.allclose(got, times, atol=2e-3)


def broken_mjpeg(path, n=10, wipe=(3, 6)):
    """An MJPEG avi of n frames whose frames `wipe` have their scan data zeroed."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuvj420p"
        for i in range(n):
            for pk in s.encode(av.VideoFrame.from_ndarray(blob_frame({"right": (20 + 10 * i, 50)}), format="rgb24")):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # JPEG SOI markers
    assert len(starts) >= n
    for k in wipe:
        a = starts[k] + 2
        data[a:a + 600] = bytes(600)
    path.write_bytes(bytes(data))
    return path


def test_reader_skips_and_counts_broken_frames(tmp_path):
    """An MJPEG clip with two frames overwritten by garbage: the others are read, the broken ones counted."""
    r = ClipReader(broken_mjpeg(tmp_path / "mj.avi"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = list(r)
    assert r.stats.broken + len(frames) == 10 and r.stats.broken >= 1
    assert any("broken frame" in str(w.message) for w in caught)


def test_process_clip_reports_broken_frames(tmp_path):
    """process_clip goes on past broken frames and says how many it skipped."""
    path = broken_mjpeg(tmp_path / "mj.avi")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        s = process_clip(BlobModel(), path, out_jsonl=tmp_path / "p.jsonl", max_hands=1)
    assert s.broken_frames >= 1 and s.frames + s.broken_frames == 10
    assert any("broken frame" in w for w in s.warnings)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == s.frames


# ------------------------------------------------------------------ smoothing
def _smooth_sequence(centers, noise, seed):
    """Noisy single-track hands along `centers` -> (raw, smoothed, true keypoints), at 30 fps."""
    rng = np.random.default_rng(seed)
    sm = HandSmoother(OneEuroConfig())
    truth, raw, out = [], [], []
    for f, c in enumerate(centers):
        h = make_hand(c, radius=20, noise=noise, rng=rng)
        h.track_id = 0
        truth.append(make_hand(c, radius=20).keypoints_2d)
        raw.append(h)
        out.append(sm([h], f / 30.0)[0])
    return raw, out, truth


def test_one_euro_steadies_a_still_hand():
    """A still hand with 1.5 px keypoint noise: acceleration drops several times, and the error too."""
    raw, out, truth = _smooth_sequence([(80.0, 60.0)] * 60, 1.5, seed=1)
    assert JitterMeter_value(out) < 0.35 * JitterMeter_value(raw)
    err = lambda hs: np.mean([np.linalg.norm(h.keypoints_2d - t, axis=-1).mean() for h, t in zip(hs[10:], truth[10:])])  # noqa: E731
    assert err(out) < 0.6 * err(raw)
    assert raw[5].keypoints_2d is not out[5].keypoints_2d  # copies, inputs untouched


def test_one_euro_follows_a_moving_hand():
    """A hand moving at ~2 hand sizes/s with noise: less jitter and still closer to the truth than the raw input."""
    centers = [(30 + 100 * f / 40, 60 + 20 * math.sin(f / 8)) for f in range(40)]
    raw, out, truth = _smooth_sequence(centers, 2.0, seed=2)
    assert JitterMeter_value(out) < 0.8 * JitterMeter_value(raw)
    err = lambda hs: np.mean([np.linalg.norm(h.keypoints_2d - t, axis=-1).mean() for h, t in zip(hs[10:], truth[10:])])  # noqa: E731
    assert err(out) < err(raw)


def JitterMeter_value(hands):
    """Mean acceleration of a single-track sequence of hands."""
    m = JitterMeter()
    for f, h in enumerate(hands):
        m.update(f, [h])
    return m.value


def test_smoothing_keeps_3d_quantities_consistent():
    """Joints = R @ vertices and cam_t = wrist hold after smoothing (one cutoff per hand for all 3D values)."""
    rng = np.random.default_rng(2)
    V = 50
    R = rng.random((21, V))
    R /= R.sum(1, keepdims=True)  # a joint regressor (rows sum to 1)
    base = rng.normal(0, 0.03, (V, 3))
    sm = HandSmoother()
    for f in range(20):
        verts = base + rng.normal(0, 0.002, (V, 3)) + [0.01 * f, 0, 0.5 + 0.003 * rng.normal()]
        j = R @ verts
        h = make_hand((50 + f, 60), noise=1.0, rng=rng)
        h.track_id, h.vertices, h.joints_3d, h.cam_t = 3, verts, j, j[0].copy()
        s = sm([h], f / 30.0)[0]
        assert np.allclose(R @ s.vertices, s.joints_3d, atol=1e-9)
        assert np.allclose(s.cam_t, s.joints_3d[0], atol=1e-9)
    assert s.vertices.shape == (V, 3)


def test_smoother_restarts_after_a_gap_and_per_track():
    """A track unseen for longer than max_gap_s is not pulled towards its old position; tracks don't mix."""
    sm = HandSmoother(OneEuroConfig(max_gap_s=0.2))
    a, b = make_hand((20, 20)), make_hand((120, 90))
    a.track_id, b.track_id = 0, 1
    sm([a, b], 0.0)
    a2 = make_hand((100, 20))
    a2.track_id = 0
    out = sm([a2], 1.0)[0]  # 1 s later: restart, no smoothing
    assert np.allclose(out.keypoints_2d, a2.keypoints_2d)
    b2 = make_hand((121, 90))
    b2.track_id = 1
    assert np.abs(sm([b2], 1.0)[0].keypoints_2d - b2.keypoints_2d).max() < 1.5  # restarted too, far from a


# ------------------------------------------------------------------ tracking logic
def test_tracks_ids_stable_under_shuffled_order_and_handedness_voted():
    """Two hands reported in random order with occasional wrong handedness: ids and labels never flicker."""
    rng = np.random.default_rng(3)
    tracks = Tracks(TrackerConfig(max_hands=2))
    seen = {}
    for f, c in enumerate(trajectory(30)):
        hands = [make_hand(c["right"], handedness="right"), make_hand(c["left"], handedness="left")]
        if f % 5 == 4:  # a confident-looking flip on one hand
            hands[0] = make_hand(c["right"], handedness="left", hscore=0.7)
        rng.shuffle(hands)
        out = tracks.update(hands, f)
        for h in out:
            name = "right" if abs(h.keypoints_2d.mean(0)[1] - 40) < 5 else "left"
            seen.setdefault(name, set()).add((h.track_id, h.handedness))
    assert seen["right"] == {(0, "right")} or seen["right"] == {(1, "right")}
    assert len(seen["left"]) == 1 and next(iter(seen["left"]))[1] == "left"
    assert len(tracks.all_tracks()) == 2


def test_tracks_close_after_max_missed_and_reopen_with_new_id():
    """A hand gone for longer than max_missed frames comes back as a new track; a short gap keeps its id."""
    tracks = Tracks(TrackerConfig(max_hands=1, max_missed=3))
    ids = []
    for f in range(20):
        visible = not (5 <= f < 7) and not (10 <= f < 16)
        out = tracks.update([make_hand((50 + f, 60))] if visible else [], f)
        ids.append(out[0].track_id if out else None)
    assert ids[:5] == [0] * 5 and ids[7:10] == [0] * 3  # 2-frame gap: same id
    assert ids[16:] == [1] * 4  # 6-frame gap: new id


def test_tracks_drop_duplicates_roi_hand_wins():
    """A fresh detection on top of a ROI-tracked hand is the same hand, not a second track."""
    tracks = Tracks(TrackerConfig(max_hands=2))
    tracks.update([make_hand((50, 60))], 0)
    out = tracks.update([make_hand((51, 60), roi_index=None, score=0.99), make_hand((50.5, 60), roi_index=0)], 1,
                        carried_ids=[0])
    assert len(out) == 1 and out[0].track_id == 0 and out[0].trace.roi_index == 0


def test_box_iou():
    """IoU basics."""
    a = np.array([[0, 0, 10, 10]])
    assert box_iou(a, a)[0, 0] == pytest.approx(1.0)
    assert box_iou(a, np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(1 / 3)
    assert box_iou(a, np.array([[20, 20, 30, 30]]))[0, 0] == 0.0


# ------------------------------------------------------------------ process_clip with the test double
def test_process_clip_writes_jsonl_video_keyframes(two_blob_clip, tmp_path):
    """Every frame gets a record with track ids; ROIs carry most frames; mp4 and keyframes are written."""
    path, traj = two_blob_clip
    model = BlobModel()
    s = process_clip(model, path, out_jsonl=tmp_path / "p.jsonl", out_video=tmp_path / "a.mp4",
                     keyframes_dir=tmp_path / "kf", keyframe_every_s=0.5)
    recs = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert s.frames == len(recs) == len(traj) and s.frames_with_hands == len(traj)
    for r in recs:
        validate_record(r)
        assert r["frame"] is not None and r["time_s"] is not None and len(r["hands"]) == 2
    assert s.tracks == 2  # the discs cross in x but keep their ids
    for r in recs:
        for h in r["hands"]:
            row = "right" if np.mean(h["keypoints_2d"], 0)[1] < 62 else "left"
            assert h["handedness"] == row
    by_track = {}
    for r in recs:
        for h in r["hands"]:
            by_track.setdefault(h["track_id"], set()).add(h["handedness"])
    assert all(len(v) == 1 for v in by_track.values())
    assert s.handedness_flips == 0 and s.handedness_flips_raw > 4  # the double flips every 7th call
    assert s.detector_frames < s.frames / 2 and s.roi_frames > s.frames / 2  # ROI tracking, not detection every frame
    assert s.jitter_px < s.jitter_raw_px
    assert jitter_px(recs) == pytest.approx(s.jitter_px, rel=0.05)  # rounding in the JSON
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == len(traj)
    kf = sorted((tmp_path / "kf").glob("*.jpg"))
    assert len(kf) == len(s.keyframes) >= 3 and s.keyframes[0] == 0
    lines = (tmp_path / "kf" / "keyframes.jsonl").read_text().splitlines()
    assert [json.loads(x)["file"] for x in lines] == [p.name for p in kf]


def test_process_clip_no_smooth_and_fallback_without_predict_frames(two_blob_clip, tmp_path):
    """--no-smooth writes the raw hands; a model without predict_frames is run on every frame, same ids."""
    path, _ = two_blob_clip

    class BatchOnly:
        version = "batch-only"

        def __init__(self):
            self.inner = BlobModel()

        def predict_batch(self, rgbs, cameras=None):
            return self.inner.predict_batch(rgbs, cameras)

    s = process_clip(BatchOnly(), path, out_jsonl=tmp_path / "r.jsonl", smooth=False)
    assert s.tracks == 2 and s.detector_frames == s.frames and not s.smoothed
    assert s.jitter_px == pytest.approx(s.jitter_raw_px)


def test_tracker_redetects_a_hand_that_slipped_out_of_its_roi(tmp_path):
    """A hand jumping out of its carried ROI is found again on the same frame, with the same id."""
    xs = [30 + 2 * f + (25 if f >= 10 else 0) for f in range(16)]  # a 25 px jump (ROI half-width 15) at frame 10
    path = write_clip(tmp_path / "jump.mp4", [blob_frame({"right": (x, 60.0)}) for x in xs])
    model = BlobModel(noise=0.0, flip_every=0)
    s = process_clip(model, path, out_jsonl=tmp_path / "j.jsonl", max_hands=1)
    recs = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [len(r["hands"]) for r in recs] == [1] * 16 and s.tracks == 1
    assert model.calls[10] == (1, False) and model.calls[11] == (0, True)  # frame 10: ROI pass, then detection
    assert sum(1 for c in model.calls if c[1]) == s.detector_frames == 2  # frame 0 and the re-detection


def test_process_clip_resumes_after_an_interruption(two_blob_clip, tmp_path):
    """A run stopped after 12 frames (with a torn last line) is continued: every frame once, ids carried on."""
    path, traj = two_blob_clip
    out = tmp_path / "r.jsonl"
    first = process_clip(BlobModel(), path, out_jsonl=out, limit=12)
    assert first.frames == 12 and first.truncated
    with open(out, "a") as f:
        f.write('{"schema": "handos.prediction/1", "file": "')  # a crash mid-line
    second = process_clip(BlobModel(seed=1), path, out_jsonl=out, resume=True)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert second.resumed_from == 12 and second.frames == len(traj) - 12
    assert [r["frame"] for r in recs] == list(range(len(traj)))
    ids = {}
    for r in recs:
        for h in r["hands"]:
            ids.setdefault(h["handedness"], set()).add(h["track_id"])
    assert all(len(v) == 1 for v in ids.values()) and len(ids) == 2
    third = process_clip(BlobModel(), path, out_jsonl=out, resume=True)  # already complete: nothing to do
    assert third.frames == 0 and len(out.read_text().splitlines()) == len(traj)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"file": "elsewhere.mp4", "frame": 0}) + "\n")
    with pytest.raises(InputError, match="another input"):
        process_clip(BlobModel(), path, out_jsonl=other, resume=True)


def test_process_clip_stride_keeps_clip_frame_numbers(two_blob_clip, tmp_path):
    """--stride 3: every third frame, numbered and timed as in the clip, same two tracks; resume stays aligned."""
    path, traj = two_blob_clip
    out = tmp_path / "s.jsonl"
    first = process_clip(BlobModel(), path, out_jsonl=out, stride=3, limit=10)
    assert [json.loads(x)["frame"] for x in out.read_text().splitlines()] == [0, 3, 6, 9]
    s = process_clip(BlobModel(), path, out_jsonl=out, stride=3, resume=True, out_video=tmp_path / "s.mp4")
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(0, len(traj), 3)) and first.frames + s.frames == len(recs)
    assert recs[2]["time_s"] == pytest.approx(6 / 30, abs=1e-3)
    assert {h["track_id"] for r in recs for h in r["hands"]} == {0, 1} and np.isfinite(s.jitter_px)
    assert len(list(ClipReader(tmp_path / "s.mp4"))) == s.frames
    with pytest.raises(InputError, match="stride"):
        ClipReader(path, stride=0)


def test_select_keyframes_every_and_on_change():
    """First frame, then every 1 s, plus a frame where the set of tracks changes."""
    recs = [{"frame": f, "time_s": f / 10, "hands": [{"track_id": 0, "handedness": "right"}]
             + ([{"track_id": 1, "handedness": "left"}] if f >= 14 else [])} for f in range(35)]
    assert select_keyframes(recs, every_s=1.0) == [0, 10, 14, 24, 34]
    assert select_keyframes(recs, every_s=1.0, on_change=False) == [0, 10, 20, 30]


def test_predict_clip_needs_an_output(two_blob_clip):
    """`handos predict CLIP` without --out: a usage error before the model loads."""
    from handos.cli.predict import main

    with pytest.raises(SystemExit):
        main([str(two_blob_clip[0])])


def test_predict_clip_prints_a_summary_line(two_blob_clip, tmp_path, capsys, monkeypatch):
    """`handos predict CLIP --out ... --limit 5`: writes the JSONL, one summary line on stderr, no traceback."""
    import handos
    from handos.cli.predict import main

    model = BlobModel()
    model.max_hands = 2
    monkeypatch.setattr(handos, "load", lambda **kwargs: model)
    assert main([str(two_blob_clip[0]), "--out", str(tmp_path / "p.jsonl"), "--limit", "5", "--keyframe-every", "0.5",
                 "--keyframes", str(tmp_path / "kf")]) == 0
    err = capsys.readouterr().err
    assert "5 frames, 5 with hands, 2 track(s)" in err and str(tmp_path / "p.jsonl") in err
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 5
    kf = (tmp_path / "kf" / "keyframes.jsonl").read_text().splitlines()
    assert 1 <= len(kf) == len(list((tmp_path / "kf").glob("*.jpg")))


@pytest.fixture(scope="module")
def small_clip_bytes(tmp_path_factory):
    """A valid 12-frame H.264 mp4 and a 12-frame MJPEG avi, as bytes."""
    d = tmp_path_factory.mktemp("fuzz")
    mp4 = write_clip(d / "s.mp4", [blob_frame({"right": (20 + 8 * i, 60.0)}) for i in range(12)])
    avi = d / "s.avi"
    with av.open(str(avi), "w") as c:
        s = c.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuvj420p"
        for i in range(12):
            for pk in s.encode(av.VideoFrame.from_ndarray(blob_frame({"left": (20 + 8 * i, 60)}), format="rgb24")):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    return {".mp4": mp4.read_bytes(), ".avi": avi.read_bytes()}


def test_reader_never_crashes_on_damaged_clips(small_clip_bytes, tmp_path):
    """Truncated or byte-corrupted clips: frames come out, or one InputError; never another exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=int(os.environ.get("HANDOS_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=list(HealthCheck))
    @given(ext=st.sampled_from([".mp4", ".avi"]), cut=st.floats(0.0, 1.0),
           flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=20))
    def check(ext, cut, flips):
        data = bytearray(small_clip_bytes[ext])
        for pos, val in flips:
            data[int(pos * (len(data) - 1))] = val
        data = bytes(data[: max(1, int(cut * len(data)))]) if cut < 1.0 else bytes(data)
        p = tmp_path / f"f{ext}"
        p.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                frames = list(ClipReader(p))
            except InputError as err:
                assert "\n" not in str(err)
                return
        assert 1 <= len(frames) <= 12 and all(f.rgb.shape == (H, W, 3) for f in frames)
        assert all(b.time_s > a.time_s for a, b in zip(frames, frames[1:]))

    check()


def test_reader_applies_display_rotation(tmp_path):
    """A phone clip stored landscape with a -90 degree display matrix comes out portrait, turned clockwise."""
    p = tmp_path / "rot.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(-90)
        for _ in range(3):
            img = np.zeros((32, 64, 3), np.uint8)
            img[:8, :8] = 255  # a marker in the stored frame's top-left corner
            for pk in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    r = ClipReader(p)
    rgb = next(iter(r)).rgb
    assert rgb.shape == (64, 32, 3) and (r.info.width, r.info.height, r.info.rotation) == (32, 64, 270)
    ys, xs = np.nonzero(rgb[..., 0] > 128)
    assert ys.mean() < 8 and xs.mean() > 24  # clockwise: top-left -> top-right


@pytest.mark.parametrize("fps", [0.5, 12.5, 30000 / 1001, 240.0])
def test_reader_odd_frame_rates(tmp_path, fps):
    """Unusual but valid rates (0.5, 12.5, 29.97, 240 fps): the rate and the frame times come through."""
    path = write_clip(tmp_path / "r.mp4", [blob_frame({}) for _ in range(5)], fps=fps)
    r = ClipReader(path)
    assert r.info.fps == pytest.approx(fps, rel=1e-3)
    times = [f.time_s for f in r]
    assert np.allclose(np.diff(times), 1 / fps, rtol=1e-2)


def test_missing_or_absurd_stream_rates_are_treated_as_unknown():
    """A 0, missing, infinite or >1000 fps header rate is ignored (times then come from timestamps or --fps)."""
    from handos.video.reader import _rate

    assert [_rate(v) for v in (None, 0, Fraction(0, 1), float("inf"), 5000, -30)] == [None] * 6
    assert _rate(Fraction(30000, 1001)) == pytest.approx(29.97, abs=1e-2)


def test_bench_clip_reports_both_modes():
    """bench_clip (what `handos bench` calls) times ROI tracking and per-frame detection on the same frames."""
    from handos.video.bench import bench_clip

    frames = [blob_frame({"right": (30 + 2 * i, 60.0), "left": (120 - 2 * i, 80.0)}) for i in range(6)]
    r = bench_clip(BlobModel(), frames=frames, hands=2, end_to_end=False)
    assert r["frames"] == 6 and r["hands_found_per_frame_tracked"] == 2 and r["hands_found_per_frame_detect"] == 2
    assert r["detector_frames_tracked"] == 1 and r["roi_tracking"] is True
    assert r["fps_tracked"] > 0 and r["fps_detect_every_frame"] > 0
