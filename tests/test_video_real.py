"""Clips with the real model: the NVGesture clip (ids, no lost frame, jitter with/without smoothing) and the CLI."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest

from handos.io.schema import validate_record
from handos.video.clip import jitter_px, process_clip

CLIP = "nvgesture_mmpose/sk_color.avi"


@pytest.fixture(scope="module")
def nv_run(model, realdata, tmp_path_factory, artifacts):
    """process_clip on the 20-frame NVGesture clip, smoothing on, JSONL + annotated mp4."""
    out = tmp_path_factory.mktemp("nv")
    summary = process_clip(model, realdata / CLIP, out_jsonl=out / "preds.jsonl",
                           out_video=artifacts / "video_nvgesture_annotated.mp4", keyframes_dir=out / "kf")
    recs = [json.loads(line) for line in (out / "preds.jsonl").read_text().splitlines()]
    report = {k: summary.to_dict()[k] for k in ("frames", "frames_with_hands", "tracks", "detector_frames",
                                                  "roi_frames", "jitter_raw_px", "jitter_px", "handedness_flips_raw",
                                                  "handedness_flips", "frames_per_s")}
    (artifacts / "video_nvgesture_report.json").write_text(json.dumps(report, indent=1))
    print("\nNVGesture clip:", json.dumps(report))
    return summary, recs, out


def test_real_clip_no_frame_lost_and_ids_stable(nv_run):
    """One record per frame, in order; the one hand keeps one id and one handedness through the clip."""
    summary, recs, _ = nv_run
    assert summary.frames == 20 and [r["frame"] for r in recs] == list(range(20))
    for r in recs:
        validate_record(r)
        assert r["width"] == 320 and r["height"] == 240 and r["time_s"] == pytest.approx(r["frame"] / 30, abs=1e-3)
    assert summary.frames_with_hands >= 18  # MediaPipe alone finds the hand in 19/20 frames
    ids = {h["track_id"] for r in recs for h in r["hands"]}
    assert ids == {0} and summary.tracks == 1
    assert len({h["handedness"] for r in recs for h in r["hands"]}) == 1
    assert summary.roi_frames > summary.detector_frames  # ROI tracking carried most frames


def test_real_clip_smoothing_lowers_jitter(nv_run):
    """Mean 2D keypoint acceleration (px/frame^2) is lower with smoothing than without (both reported)."""
    summary, recs, _ = nv_run
    assert np.isfinite(summary.jitter_raw_px) and np.isfinite(summary.jitter_px)
    assert summary.jitter_px < summary.jitter_raw_px
    assert jitter_px(recs) == pytest.approx(summary.jitter_px, rel=0.02)  # the JSONL holds the smoothed output


def test_real_clip_outputs_play(nv_run, artifacts):
    """The annotated mp4 is H.264 yuv420p with all 20 frames; keyframes come with their records."""
    summary, _, out = nv_run
    with av.open(str(artifacts / "video_nvgesture_annotated.mp4")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert sum(1 for _ in c.decode(video=0)) == 20
    assert summary.keyframes and summary.keyframes[0] == 0
    assert len(list((out / "kf").glob("*.jpg"))) == len(summary.keyframes)


def test_clip_cli_writes_jsonl(model, realdata, tmp_path, capsys, monkeypatch):
    """`handos predict CLIP --out ... --no-smooth --limit 3` writes 3 records and says so on stderr."""
    import handos
    from handos.__main__ import main

    monkeypatch.setattr(handos, "load", lambda **kwargs: model)  # the session's model, not a second load
    assert main(["predict", str(realdata / CLIP), "--out", str(tmp_path / "p.jsonl"), "--limit", "3", "--no-smooth",
                 "--device", "cpu"]) == 0
    recs = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in recs] == [0, 1, 2]
    assert "3 frames" in capsys.readouterr().err


def test_synthetic_clip_tracked_joints_follow_the_truth(model, tmp_path, artifacts):
    """Our hand model moving along a known 3D path, rendered, encoded as H.264: tracked joints follow the truth."""
    from handos.video.synthetic import synthetic_clip, tracking_errors
    from handos.video.writer import VideoWriter

    clip = synthetic_clip(16, hands=1, cycles=0.5)
    src = tmp_path / "synthetic.mp4"
    with VideoWriter(src, fps=clip.fps) as w:
        for f in clip.frames:
            w.write(f)
    summary = process_clip(model, src, out_jsonl=tmp_path / "p.jsonl", out_video=artifacts / "video_synthetic_annotated.mp4",
                           camera=clip.camera)
    recs = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    err = tracking_errors(recs, clip)
    size = float(np.ptp(clip.keypoints_2d[..., 1], axis=-1).mean())  # hand height in px
    report = dict(err, hand_height_px=size, detector_frames=summary.detector_frames, roi_frames=summary.roi_frames,
                  jitter_raw_px=summary.jitter_raw_px, jitter_px=summary.jitter_px,
                  handedness_flips_raw=summary.handedness_flips_raw, handedness_flips=summary.handedness_flips,
                  handedness=sorted({h["handedness"] for r in recs for h in r["hands"]}), truth=clip.handedness)
    (artifacts / "video_synthetic_report.json").write_text(json.dumps(report, indent=1))
    print("\nsynthetic clip:", json.dumps(report))
    assert err["recall"] >= 0.9 and err["ids_per_true_hand"] == 1
    assert err["mean_err_2d_px"] < 0.15 * size
    assert err["mpjpe_root_relative_mm"] < 60.0  # a random-init decoder gives ~120 mm here
    assert len(report["handedness"]) == 1


def test_handos_predict_dispatches_clips(model, realdata, tmp_path, monkeypatch):
    """`python -m handos predict clip.avi --out preds.jsonl --video-out annotated.mp4` (the top-level verb)."""
    import handos
    from handos.__main__ import main

    monkeypatch.setattr(handos, "load", lambda **kwargs: model)
    rc = main(["predict", str(realdata / CLIP), "--out", str(tmp_path / "p.jsonl"),
               "--video-out", str(tmp_path / "a.mp4"), "--quiet"])
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(20)) and all(h["track_id"] is not None for r in recs for h in r["hands"])
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264" and sum(1 for _ in c.decode(video=0)) == 20
