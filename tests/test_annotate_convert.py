"""Converters between handos records and Label Studio tasks/exports (pure functions, no server)."""
from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from annotate import convert
from handos.errors import InputError
from handos.io.schema import JOINT_NAMES, SCHEMA, validate_record


def make_hand(rng: np.random.Generator, hid: int, W: int, H: int, handedness: str, inside: bool = True) -> dict:
    """A schema hand with joints spread in a box (all inside the image unless `inside` is False)."""
    cx, cy = rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.7) * H
    kps = np.stack([cx + rng.uniform(-60, 60, 21), cy + rng.uniform(-60, 60, 21)], 1)  # (21, 2)
    if not inside:
        kps[4] = [-15.0, cy]  # thumb tip off the left border
    x1, y1 = kps.min(0) - 8
    x2, y2 = kps.max(0) + 8
    j3 = rng.normal(0, 0.05, (21, 3)) + [0.0, 0.0, 0.6]
    return {"id": hid, "track_id": None, "score": round(float(rng.uniform(0.6, 1.0)), 4), "handedness": handedness,
            "handedness_score": 0.9, "bbox_xyxy": [float(x1), float(y1), float(x2), float(y2)],
            "keypoints_2d": np.round(kps, 2).tolist(), "keypoints_score": np.round(rng.uniform(0.2, 1, 21), 4).tolist(),
            "joints_3d": np.round(j3, 5).tolist(), "joints_3d_frame": "camera", "cam_t": np.round(j3[0], 5).tolist(),
            "vertices": None}


def make_record(seed: int = 0, W: int = 640, H: int = 480, n: int = 2, inside: bool = True) -> dict:
    """A hand-written handos.prediction/1 record (before the pipeline existed; the schema is the contract)."""
    rng = np.random.default_rng(seed)
    hands = [make_hand(rng, i, W, H, ("right", "left")[i % 2], inside=inside or i > 0) for i in range(n)]
    rec = {"schema": SCHEMA, "file": f"images/{seed:05d}.jpg", "width": W, "height": H, "model": "handos-test-v1",
           "camera": {"fx": 500.0, "fy": 500.0, "cx": W / 2, "cy": H / 2}, "frame": None, "time_s": None, "hands": hands}
    validate_record(rec)
    return rec


def annotate_from_prediction(task: dict) -> dict:
    """What Label Studio exports after an annotator accepts the prediction unchanged."""
    out = copy.deepcopy(task)
    out["id"] = 7
    out["annotations"] = [{"id": 1, "result": copy.deepcopy(task["predictions"][0]["result"]), "was_cancelled": False,
                           "updated_at": "2026-01-01T00:00:00Z"}]
    return out


def test_label_config_is_valid_xml_with_all_joints_and_hands():
    root = ET.fromstring(convert.label_config())
    kp = root.find(".//KeyPointLabels[@name='joints']")
    assert [lab.get("value") for lab in kp.findall("Label")] == list(JOINT_NAMES)
    rect = root.find(".//RectangleLabels[@name='hand']")
    assert sorted(lab.get("value") for lab in rect.findall("Label")) == ["left hand", "right hand"]
    flags = root.find(".//Choices[@name='hand_flags']")
    assert flags.get("perRegion") == "true" and {c.get("value") for c in flags} >= {"occluded", "truncated"}
    assert root.find(".//Image").get("value") == "$" + convert.IMAGE_KEY


def test_record_to_task_uses_percent_coordinates_and_parent_ids():
    rec = make_record(1)
    task = convert.record_to_task(rec, "/data/upload/1/x.jpg", "k1")
    assert task["data"][convert.RECORD_FIELD] == rec and task["data"][convert.KEY_FIELD] == "k1"
    pred = task["predictions"][0]
    assert pred["model_version"] == "handos-test-v1"
    assert pred["score"] == pytest.approx(np.mean([h["score"] for h in rec["hands"]]))
    boxes = [r for r in pred["result"] if r["type"] == "rectanglelabels"]
    joints = [r for r in pred["result"] if r["type"] == "keypointlabels"]
    assert len(boxes) == 2 and len(joints) == 42
    W, H = rec["width"], rec["height"]
    for r in pred["result"]:
        assert r["original_width"] == W and r["original_height"] == H
    b = boxes[0]["value"]
    x1, y1, x2, y2 = rec["hands"][0]["bbox_xyxy"]
    assert b["x"] == pytest.approx(x1 / W * 100) and b["width"] == pytest.approx((x2 - x1) / W * 100)
    assert b["rectanglelabels"] == ["right hand"] and boxes[1]["value"]["rectanglelabels"] == ["left hand"]
    j = next(r for r in joints if r["id"] == "h1k5")
    assert j["parentID"] == "h1" and j["value"]["keypointlabels"] == ["index1"]
    assert j["value"]["y"] == pytest.approx(rec["hands"][1]["keypoints_2d"][5][1] / H * 100)


def test_joints_outside_the_image_are_left_out_and_the_hand_marked_truncated():
    rec = make_record(2, inside=False)
    result = convert.record_to_result(rec)
    ids = {r["id"] for r in result if r["type"] == "keypointlabels"}
    assert "h0k4" not in ids and "h0k3" in ids and "h1k4" in ids
    flags = [r for r in result if r["type"] == "choices"]
    assert len(flags) == 1 and flags[0]["id"] == "h0" and flags[0]["value"]["choices"] == ["truncated"]
    box = next(r for r in result if r["id"] == "h0" and r["type"] == "rectanglelabels")["value"]
    assert box["x"] == 0.0  # clipped to the image


def test_bad_records_are_refused():
    rec = make_record(3)
    with pytest.raises(InputError):
        convert.record_to_task({**rec, "schema": "other"}, "u", "k")
    rec["hands"][0]["handedness"] = "both"
    with pytest.raises(InputError):
        convert.record_to_result(rec)


def test_round_trip_record_to_task_to_export_loses_nothing():
    recs = [make_record(s, W=w, H=h, n=n) for s, (w, h, n) in enumerate([(640, 480, 2), (333, 517, 1), (1920, 1080, 0)])]
    tasks = [annotate_from_prediction(convert.record_to_task(r, f"/data/upload/1/{i}.jpg", f"key{i}")) for i, r in enumerate(recs)]
    coco = convert.export_to_coco(tasks)
    assert coco["stats"]["images"] == 3 and coco["stats"]["hands"] == 3
    assert coco["stats"]["orphan_joints"] == coco["stats"]["duplicate_joints"] == 0
    for img, rec in zip(coco["images"], recs):
        assert img["handos_prediction"] == rec  # the full record (3D, scores, camera) travels with the image
        # a relative file (as handos was given it) is taken from the current folder: absolute in the export
        assert img["file_name"] == str(Path.cwd() / rec["file"])
        assert (img["width"], img["height"], img["camera"]) == (rec["width"], rec["height"], rec["camera"])
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        assert len(anns) == len(rec["hands"])
        for ann, hand in zip(anns, rec["hands"]):
            k = np.asarray(ann["keypoints"]).reshape(21, 3)
            np.testing.assert_allclose(k[:, :2], hand["keypoints_2d"], atol=1e-6)
            assert (k[:, 2] == 2).all() and ann["num_keypoints"] == 21
            x1, y1, x2, y2 = hand["bbox_xyxy"]
            np.testing.assert_allclose(ann["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1e-6)
            assert ann["handedness"] == hand["handedness"]
            side = "righthand" if hand["handedness"] == "right" else "lefthand"
            assert ann[f"{side}_valid"] and ann[f"{side}_kpts"] == ann["keypoints"]
            assert ann["handos_prediction"] == hand
    back = [convert.task_to_record(t) for t in tasks]
    for b, rec in zip(back, recs):
        for hb, hr in zip(b["hands"], rec["hands"]):
            np.testing.assert_allclose(hb["keypoints_2d"], hr["keypoints_2d"], atol=1e-6)
            assert hb["joints_3d"] == hr["joints_3d"] and hb["cam_t"] == hr["cam_t"]
    ev = convert.export_to_eval(tasks)
    assert [len(i["hands"]) for i in ev["images"]] == [2, 1, 0]
    assert ev["images"][0]["hands"][0]["joints_2d"][3] == pytest.approx(recs[0]["hands"][0]["keypoints_2d"][3])


def test_export_follows_corrections_parent_ids_and_position():
    rec = make_record(4)
    task = annotate_from_prediction(convert.record_to_task(rec, "/u.jpg", "k"))
    result = task["annotations"][0]["result"]
    W = rec["width"]
    moved = next(r for r in result if r["id"] == "h0k8")
    moved["value"]["x"] += 1.0  # the annotator drags the index tip 1% of the width to the right
    result[:] = [r for r in result if r["id"] != "h1k20"]  # and deletes the left hand's pinky tip
    free = copy.deepcopy(next(r for r in result if r["id"] == "h1k19"))
    free.pop("parentID")  # a joint placed by hand, tied to no box: grouped by position
    free["id"], free["value"]["keypointlabels"] = "new1", ["pinky4"]
    result.append(free)
    flags = {"id": "h1", "from_name": "hand_flags", "to_name": "image", "type": "choices", "value": {"choices": ["occluded"]}}
    result.append(flags)
    coco = convert.export_to_coco([task])
    a0, a1 = coco["annotations"]
    k0 = np.asarray(a0["keypoints"]).reshape(21, 3)
    assert k0[8, 0] == pytest.approx(rec["hands"][0]["keypoints_2d"][8][0] + W / 100)
    k1 = np.asarray(a1["keypoints"]).reshape(21, 3)
    assert k1[20, 2] == 2 and k1[20, 1] == pytest.approx(rec["hands"][1]["keypoints_2d"][19][1], abs=1e-6)
    assert a1["attributes"]["occluded"] and not a0["attributes"]["occluded"]
    result[:] = [r for r in result if r["id"] != "new1"]
    k1 = np.asarray(convert.export_to_coco([task])["annotations"][1]["keypoints"]).reshape(21, 3)
    assert k1[20, 2] == 0 and a1["num_keypoints"] == 21
    ev = convert.export_to_eval([task])
    assert ev["images"][0]["hands"][1]["joints_2d"][20] is None


def test_rotated_box_exports_its_axis_aligned_bounds():
    box = convert._region_box_px({"x": 10, "y": 10, "width": 20, "height": 10, "rotation": 90}, 100, 100)
    np.testing.assert_allclose(box, [0, 10, 10, 30], atol=1e-9)


def test_unlabelled_tasks_are_skipped_unless_predictions_are_asked_for():
    task = convert.record_to_task(make_record(5), "/u.jpg", "k")
    assert convert.export_to_coco([task])["stats"]["skipped_unlabelled"] == 1
    coco = convert.export_to_coco([task], use_predictions=True)
    assert coco["images"][0]["source"] == "prediction" and len(coco["annotations"]) == 2
    by_id = {**task, "predictions": [12]}  # Label Studio's JSON export lists predictions by id: use the record
    assert convert.export_to_coco([by_id], use_predictions=True)["annotations"] == coco["annotations"]
    cancelled = {**task, "annotations": [{"id": 1, "result": [], "was_cancelled": True}]}
    assert convert.export_to_coco([cancelled])["stats"]["skipped_unlabelled"] == 0  # skipped: not "not yet labelled"


def test_skipped_tasks_stay_out_and_are_counted():
    rec = make_record(6)
    task = convert.record_to_task(rec, "/data/upload/1/a.jpg", "k")
    skipped = {**task, "id": 1, "annotations": [{"id": 1, "result": [], "was_cancelled": True}], "cancelled_annotations": 1}
    counted_only = {**task, "id": 2, "annotations": [], "cancelled_annotations": 1}  # an export filtered the skips out
    skipped_then_done = annotate_from_prediction(task)
    skipped_then_done["annotations"].append({"id": 2, "result": [], "was_cancelled": True, "updated_at": "2027-01-01"})
    unlabelled = {**task, "id": 9}
    for use in (False, True):
        coco = convert.export_to_coco([skipped, counted_only, skipped_then_done, unlabelled], use_predictions=use)
        st = coco["stats"]
        assert st["skipped"] == 2 and st["tasks"] == 4
        assert [i["ls_task_id"] for i in coco["images"]] == ([7, 9] if use else [7])
        assert st["skipped_unlabelled"] == (0 if use else 1)
        assert coco["images"][0]["source"] == "annotation" and len(coco["annotations"]) == 2 + (2 if use else 0)
        assert convert.task_to_record(skipped, use_predictions=use) is None
    assert [convert.task_status(t) for t in (skipped, counted_only, skipped_then_done, unlabelled)] == [
        "skipped", "skipped", "annotated", "unlabelled"]
    assert len(convert.export_to_eval([skipped, skipped_then_done], use_predictions=True)["images"]) == 1


def png(path: Path, w: int, h: int) -> bytes:
    """Write a w x h PNG at `path`; its bytes."""
    from annotate.push import encode_png

    data = encode_png(np.zeros((h, w, 3), np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def test_every_exported_image_has_its_size(tmp_path):
    rec = make_record(7, W=320, H=200)
    pred = convert.record_to_prediction(rec)
    # a task the ML backend predicted: only an image URL and the prediction (no handos record, no file)
    backend_task = {"id": 1, "data": {"image": "/data/upload/1/x.png"}, "predictions": [pred]}
    coco = convert.export_to_coco([backend_task], use_predictions=True)
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (320, 200) and len(coco["annotations"]) == 2
    # annotated with every hand deleted (a real 0-hand image): the size comes from the prediction
    emptied = {**backend_task, "annotations": [{"id": 1, "result": [], "was_cancelled": False}]}
    img = convert.export_to_coco([emptied])["images"][0]
    assert (img["width"], img["height"]) == (320, 200) and img["source"] == "annotation"
    # nothing says the size anywhere: read from the file's header (local-files under the document root) ...
    png(tmp_path / "docs" / "set" / "e.png", 40, 30)
    bare = {"id": 2, "data": {"image": "/data/local-files/?d=set/e.png"}, "annotations": [{"id": 3, "result": []}]}
    coco = convert.export_to_coco([bare], local_root=tmp_path / "docs")
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (40, 30)
    assert coco["images"][0]["file_name"] == str(tmp_path / "docs" / "set" / "e.png")
    # ... or, for an image only on Label Studio, through an explicit fetcher; without one it is left out
    upload = {"id": 3, "data": {"image": "/data/upload/1/y.png"}, "annotations": [{"id": 4, "result": []}]}
    coco = convert.export_to_coco([upload])
    assert coco["images"] == [] and coco["stats"]["unsized"] == 1
    fetched = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return png(tmp_path / "y.png", 50, 60)

    img = convert.export_to_coco([upload, emptied], fetch=fetch)["images"][0]
    assert (img["width"], img["height"], img["file_name"]) == (50, 60, None) and fetched == ["/data/upload/1/y.png"]

    def broken(url: str) -> bytes:
        raise InputError("unreachable")

    assert convert.export_to_coco([upload], fetch=broken)["stats"]["unsized"] == 1


def test_image_size_reads_the_header_with_exif_rotation(tmp_path):
    import io

    from PIL import Image

    assert convert.image_size(png(tmp_path / "a.png", 7, 5)) == (7, 5)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: Label Studio and handos see it portrait
    buf = io.BytesIO()
    Image.new("RGB", (64, 32)).save(buf, "JPEG", exif=exif)
    (tmp_path / "r.jpg").write_bytes(buf.getvalue())
    assert convert.image_size(tmp_path / "r.jpg") == (32, 64) == convert.image_size(buf.getvalue())
    assert convert.image_size(b"not an image") is None and convert.image_size(tmp_path / "missing.png") is None


def test_file_name_is_absolute_or_relative_to_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    png(root / "a" / "x.png", 20, 20)
    rec = make_record(8, W=20, H=20, n=0)
    absolute = annotate_from_prediction(convert.record_to_task(rec, "/data/upload/1/x.png", "k1",
                                                               extra_data={convert.FILE_FIELD: str(root / "a" / "x.png")}))
    relative = annotate_from_prediction(convert.record_to_task({**rec, "file": "a/x.png"}, "/data/upload/1/x.png", "k2"))
    elsewhere = annotate_from_prediction(convert.record_to_task(rec, "/data/upload/1/z.png", "k3",
                                                                extra_data={convert.FILE_FIELD: str(tmp_path / "z.png")}))
    upload_only = {"id": 5, "data": {"image": "/data/upload/1/w.png"}, "annotations": [{"id": 1, "result": [
        {**r, "original_width": 20, "original_height": 20} for r in convert.record_to_result(make_record(8, W=20, H=20, n=1))]}]}
    tasks = [absolute, relative, elsewhere, upload_only]
    monkeypatch.chdir(tmp_path)
    names = [i["file_name"] for i in convert.export_to_coco(tasks)["images"]]
    assert names == [str(root / "a" / "x.png"), str(tmp_path / "a" / "x.png"), str(tmp_path / "z.png"), None]
    coco = convert.export_to_coco(tasks, root=root)
    assert [i["file_name"] for i in coco["images"]] == ["a/x.png", "a/x.png", str(tmp_path / "z.png"), None]
    assert coco["stats"]["no_local_file"] == 1 and coco["images"][3]["image_url"] == "/data/upload/1/w.png"
    monkeypatch.chdir(root)  # a relative file found under the current folder when --root does not hold it
    assert convert.export_to_coco([relative], root=tmp_path / "elsewhere")["images"][0]["file_name"] == str(root / "a" / "x.png")
    assert [i["file"] for i in convert.export_to_eval(tasks, root=root)["images"]] == [
        "a/x.png", "a/x.png", str(tmp_path / "z.png"), None]


def test_cli_export_takes_a_root_and_counts_skipped_tasks(tmp_path, capsys):
    import json

    from annotate import cli

    root = tmp_path / "data"
    png(root / "b.png", 20, 20)
    rec = make_record(9, W=20, H=20, n=0)
    done = annotate_from_prediction(convert.record_to_task(rec, "/data/upload/1/b.png", "k1",
                                                           extra_data={convert.FILE_FIELD: str(root / "b.png")}))
    skipped = {**convert.record_to_task(rec, "/data/upload/1/c.png", "k2"), "id": 8,
               "annotations": [{"id": 2, "result": [], "was_cancelled": True}]}
    (tmp_path / "export.json").write_text(json.dumps([done, skipped]))
    out = tmp_path / "train.json"
    assert cli.main(["--export", str(out), "--from-file", str(tmp_path / "export.json"), "--root", str(root),
                     "--include-predictions"]) == 0
    coco = json.loads(out.read_text())
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [("b.png", 20, 20)]
    assert "0 not yet labelled, 1 skipped" in capsys.readouterr().err


def test_image_key_is_stable_and_content_based():
    a = np.zeros((4, 5, 3), np.uint8)
    assert convert.image_key(a) == convert.image_key(a.copy()) != convert.image_key(a[:, :4])
    assert convert.image_key(b"abc") == convert.image_key(b"abc") != convert.image_key(b"abd")


def test_joints_come_before_their_box_and_markers_are_sized_by_the_box():
    rec = make_record(9, W=1280, H=720, n=2)
    result = convert.record_to_result(rec)
    # per hand: its 21 joints, then its box (Label Studio draws later regions on top: the joints stay grabbable)
    for i in range(2):
        ids = [r["id"] for r in result]
        box_at = next(n for n, r in enumerate(result) if r["id"] == f"h{i}" and r["type"] == "rectanglelabels")
        assert all(ids.index(f"h{i}k{j}") < box_at for j in range(21))
        assert all(r["parentID"] == f"h{i}" for r in result if r["id"].startswith(f"h{i}k"))
    small = {"bbox_xyxy": [100, 100, 140, 160]}  # 40 px wide: 2 % of 40 px -> clamped up to 1.5 px
    big = {"bbox_xyxy": [0, 0, 900, 700]}  # clamped down to 8 px
    mid = {"bbox_xyxy": [0, 0, 300, 200]}  # 2 % of 200 px = 4 px
    lo, hi = convert.POINT_RADIUS_PX
    assert convert.point_size_pct(small["bbox_xyxy"], 1280) == pytest.approx(lo / 1280 * 100)
    assert convert.point_size_pct(big["bbox_xyxy"], 1280) == pytest.approx(hi / 1280 * 100)
    assert convert.point_size_pct(mid["bbox_xyxy"], 1280) == pytest.approx(4.0 / 1280 * 100)
    joint = next(r for r in result if r["id"] == "h0k0")
    assert joint["value"]["width"] == pytest.approx(convert.point_size_pct(rec["hands"][0]["bbox_xyxy"], 1280))


def test_label_config_layout_keeps_the_converters_tags():
    root = ET.fromstring(convert.label_config())
    names = {el.get("name") for el in root.iter() if el.get("name")}
    assert {convert.IMAGE_KEY, convert.BOX_TAG, convert.JOINT_TAG, convert.HAND_FLAGS_TAG, convert.HAND_NOTE_TAG,
            convert.JOINT_FLAGS_TAG} <= names
    assert root.find(".//RectangleLabels[@name='hand']").get("smart") == "true"  # the smart tool for missed hands
    side = [v for v in root.iter("View") if "display: flex" in (v.get("style") or "")]
    assert side, "the image and the side column sit in a flex row"
