"""Input expansion and the resumable record writer behind `handos predict` (no model needed)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from handos.errors import InputError
from handos.io.manifest import expand_inputs
from handos.io.records import RecordWriter, read_records


def make_images(folder, n):
    """n small PNGs in folder/sub."""
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / "sub" / f"{i:03d}.png"
        Image.fromarray(np.full((20, 20, 3), i, np.uint8)).save(p)
        paths.append(p)
    return paths


def test_folders_globs_manifests(tmp_path):
    paths = make_images(tmp_path, 3)
    assert [it.path for it in expand_inputs([str(tmp_path)])] == [str(p) for p in paths]
    assert len(expand_inputs([str(tmp_path / "sub" / "*.png"), str(paths[0])])) == 3  # de-duplicated
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"file": "sub/001.png", "camera": {"fx": 100}}) + "\n\n"
                        + json.dumps({"file": "sub/002.png", "camera": None}) + "\n")
    items = expand_inputs([str(manifest)])
    assert [it.file for it in items] == ["sub/001.png", "sub/002.png"]
    assert items[0].camera == {"fx": 100} and items[0].path == str(tmp_path / "sub" / "001.png")


@pytest.mark.parametrize("content, fragment", [("not json\n", "JSON object"), ('{"x": 1}\n', '"file"'),
                                               ('{"file": "a.png", "camera": 3}\n', "camera"), ("", "empty")])
def test_bad_manifests(tmp_path, content, fragment):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(content)
    with pytest.raises(InputError, match=fragment):
        expand_inputs([str(manifest)])


def test_missing_inputs(tmp_path):
    with pytest.raises(InputError, match="no such"):
        expand_inputs([str(tmp_path / "nothing.jpg")])
    with pytest.raises(InputError, match="matches no"):
        expand_inputs([str(tmp_path / "*.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        expand_inputs([str(tmp_path / "empty")])


def test_writer_resumes_and_survives_a_torn_line(tmp_path):
    out = tmp_path / "preds.jsonl"
    w = RecordWriter(str(out))
    for i in range(3):
        w.write({"file": f"{i}.png", "hands": []})
    w.close()
    with open(out, "a") as fh:
        fh.write('{"file": "3.png", "han')  # a crash mid-line
    w = RecordWriter(str(out))
    assert w.done == {"0.png", "1.png", "2.png"}
    w.write({"file": "3.png", "hands": []})
    w.close()
    assert [r["file"] for r in read_records(out)] == ["0.png", "1.png", "2.png", "3.png"]
    with pytest.raises(InputError, match="exists"):
        RecordWriter(str(out), resume=False)


def test_sharded_output(tmp_path):
    w = RecordWriter(str(tmp_path / "shards"), shard_size=2)
    for i in range(5):
        w.write({"file": f"{i}.png", "hands": []})
    w.close()
    assert len(list((tmp_path / "shards").glob("preds-*.jsonl"))) == 3
    assert len(list(read_records(tmp_path / "shards"))) == 5
    assert RecordWriter(str(tmp_path / "shards"), shard_size=2).done == {f"{i}.png" for i in range(5)}


def test_parquet_shards(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet output is part of the optional handos[ray] extra")
    w = RecordWriter(str(tmp_path / "pq"), fmt="parquet", shard_size=2)
    for i in range(3):
        w.write({"file": f"{i}.png", "hands": [{"id": 0}]})
    w.close()
    assert [r["file"] for r in read_records(tmp_path / "pq")] == ["0.png", "1.png", "2.png"]


def test_clip_extensions_match_the_reader():
    from handos.io.manifest import VIDEO_EXTS
    from handos.video.reader import VIDEO_SUFFIXES

    assert VIDEO_EXTS == set(VIDEO_SUFFIXES)


class _FakeModel:
    """records_batch without a network: one empty record per image."""

    def records_batch(self, images, cameras=None, files=None, include_vertices=False):
        return [{"file": f, "hands": []} for f in files]


def test_broken_link_in_a_folder_is_listed_as_an_error(tmp_path):
    from handos.batch.runner import run_images

    paths = make_images(tmp_path, 2)
    link = tmp_path / "sub" / "gone.jpg"
    link.symlink_to(tmp_path / "deleted.jpg")
    items = expand_inputs([str(tmp_path)])
    assert str(link) in [it.path for it in items]
    assert len(expand_inputs([str(tmp_path / "sub" / "*.jpg")])) == 1  # globs keep it too
    out = tmp_path / "preds.jsonl"
    writer = RecordWriter(str(out))
    summary = run_images(_FakeModel(), items, writer, batch_size=4, workers=0)
    assert summary.done == len(paths) and summary.failed == 1 and "broken symbolic link" in summary.errors[0]
    errors = [json.loads(line) for line in open(writer.errors_path)]
    assert [e["file"] for e in errors] == [str(link)]


def test_manifest_boxes_and_a_boxes_file(tmp_path):
    paths = make_images(tmp_path, 3)
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text(json.dumps({"file": "sub/001.png", "boxes": [[1, 2, 10, 12], [0, 0, 5.5, 5]], "camera": None}) + "\n"
                     + json.dumps({"file": "sub/002.png", "boxes": []}) + "\n")
    items = expand_inputs([str(boxes)])  # a manifest whose lines have boxes
    assert [it.boxes for it in items] == [((1, 2, 10, 12), (0, 0, 5.5, 5)), ()]
    # --boxes: the named inputs keep their order, those in the boxes file take its boxes and name, the rest follow
    items = expand_inputs([str(paths[1]), str(paths[0])], boxes=str(boxes))
    assert [(it.file, it.boxes is not None) for it in items] == [("sub/001.png", True), (str(paths[0]), False),
                                                                 ("sub/002.png", True)]
    assert items[0].path == str(tmp_path / "sub" / "001.png")
    assert all(it.boxes is None for it in expand_inputs([str(tmp_path)]))


@pytest.mark.parametrize("line, fragment", [
    ({"file": "a.png", "boxes": [[0, 0, 1]]}, "4 finite numbers"),
    ({"file": "a.png", "boxes": [[0, 0, float("inf"), 1]]}, "4 finite numbers"),
    ({"file": "a.png", "boxes": [[5, 0, 1, 1]]}, "x2 > x1"),
    ({"file": "a.png", "boxes": {"x": 1}}, "must be a list"),
    ({"file": "a.png"}, "needs \"boxes\""),
])
def test_bad_boxes_files(tmp_path, line, fragment):
    (tmp_path / "b.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(InputError, match=fragment):
        expand_inputs([], boxes=str(tmp_path / "b.jsonl"))
    with pytest.raises(InputError, match="no such boxes file"):
        expand_inputs([], boxes=str(tmp_path / "none.jsonl"))


class _BoxModel:
    """records_batch that echoes its box prompts: one hand per box."""

    def __init__(self) -> None:
        self.calls: list = []

    def records_batch(self, images, cameras=None, files=None, include_vertices=False, **kw):
        self.calls.append(kw.get("boxes"))
        boxes = kw.get("boxes") or [None] * len(files)
        return [{"file": f, "hands": [{"bbox_xyxy": b} for b in (bx or [])]} for f, bx in zip(files, boxes)]


def test_runner_passes_boxes_and_lists_boxes_outside_the_image(tmp_path):
    from handos.batch.runner import run_images

    make_images(tmp_path, 3)  # 20x20 px
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text(json.dumps({"file": "sub/001.png", "boxes": [[1, 2, 10, 12], [0, 0, 5, 5]]}) + "\n"
                     + json.dumps({"file": "sub/002.png", "boxes": [[30, 30, 40, 40]]}) + "\n")
    items = expand_inputs([str(tmp_path / "sub" / "000.png")], boxes=str(boxes))
    model, writer = _BoxModel(), RecordWriter(str(tmp_path / "p.jsonl"))
    summary = run_images(model, items, writer, batch_size=8, workers=0)
    assert summary.done == 2 and summary.failed == 1 and "outside the 20x20 image" in summary.errors[0]
    assert model.calls == [[None, [[1, 2, 10, 12], [0, 0, 5, 5]]]]
    assert [len(r["hands"]) for r in read_records(tmp_path / "p.jsonl")] == [0, 2]
    assert _FakeModel().records_batch([], files=[]) == []  # callers without boxes keep the old signature


def test_predict_cli_with_a_boxes_file(tmp_path, model, monkeypatch, realdata):
    """`handos predict IMG --boxes boxes.jsonl`: the boxed images hold exactly their hands, the others are detected."""
    import handos
    from handos.__main__ import main as dispatch

    ge = realdata / "ge2019_realworld"
    ann = json.loads((ge / "derived_annotations.json").read_text())
    ims = ann["images"][:2]
    j = np.asarray(ims[0]["hands"][0]["joints_2d"], float)
    box = [*j.min(0), *j.max(0)]
    boxes = tmp_path / "boxes.jsonl"
    rel = os.path.relpath(ge / ims[0]["file"], tmp_path)  # relative to the boxes file
    boxes.write_text(json.dumps({"file": rel, "boxes": [box, [0, 0, 30, 30]], "camera": None}) + "\n")
    monkeypatch.setattr(handos, "load", lambda **kw: model)  # the session's model, not a second load
    out = tmp_path / "preds.jsonl"
    assert dispatch(["predict", str(ge / ims[1]["file"]), "--boxes", str(boxes), "--out", str(out), "--quiet",
                     "--device", "cpu", "--workers", "0"]) == 0
    recs = list(read_records(out))
    assert [r["file"] for r in recs] == [str(ge / ims[1]["file"]), rel]
    assert len(recs[0]["hands"]) == 1  # detected as usual
    hands = recs[1]["hands"]
    assert len(hands) == 2  # one per box, in order, the empty corner included
    assert np.linalg.norm(np.asarray(hands[0]["keypoints_2d"]) - j, axis=1).mean() < 10
    assert dispatch(["predict", "--out", str(tmp_path / "x.jsonl")]) == 2  # nothing to predict: one-line error
