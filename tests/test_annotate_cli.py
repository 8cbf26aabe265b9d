"""`python -m handos label` without a server: argument checks and offline export, each a one-line error."""
from __future__ import annotations

import json

import pytest
from test_annotate_convert import annotate_from_prediction, make_record

from annotate import cli, convert
from handos.errors import InputError
from handos.io.records import RecordWriter


@pytest.fixture()
def no_key(monkeypatch):
    """No Label Studio settings in the environment."""
    for k in ("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_URL", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
        monkeypatch.delenv(k, raising=False)


@pytest.mark.parametrize("argv, message", [
    (["x.jpg", "--ls-url", "http://127.0.0.1:1"], "--project NAME is required"),
    (["x.jpg", "--project", "abc"], "no Label Studio URL"),
    (["x.jpg", "--project", "abc", "--ls-url", "ftp://host"], "must be an http(s) URL"),
    (["--project", "abc", "--ls-url", "http://127.0.0.1:1"], "give images, folders or prediction files"),
    (["x.jpg", "--project", "abc", "--ls-url", "http://127.0.0.1:1", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["x.jpg", "--project", "abc", "--ls-url", "http://127.0.0.1:1", "--local-files"], "--local-files needs --local-files-root"),
    (["no/such/file.jpg", "--project", "abc", "--ls-url", "http://127.0.0.1:1"], "no such file"),
])
def test_bad_arguments_are_one_line_input_errors(argv, message, no_key):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        cli.main(argv)
    assert "\n" not in str(err.value)


def test_prediction_files_with_missing_images_say_what_to_do(tmp_path, no_key):
    writer = RecordWriter(str(tmp_path / "preds.jsonl"))
    writer.write(make_record(1))
    writer.close()
    with pytest.raises(InputError, match="--image-root"):
        cli.main([str(tmp_path / "preds.jsonl"), "--project", "abc", "--ls-url", "http://127.0.0.1:1"])


def test_no_key_is_reported_before_any_work(tmp_path, no_key):
    img = tmp_path / "a.png"
    import numpy as np

    from annotate.push import encode_png

    img.write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(InputError, match="LABEL_STUDIO_API_KEY"):
        cli.main([str(img), "--project", "abc", "--ls-url", "http://127.0.0.1:1"])


def test_offline_export_from_a_downloaded_file(tmp_path, no_key):
    recs = [make_record(s) for s in range(2)]
    tasks = [annotate_from_prediction(convert.record_to_task(r, f"/data/upload/1/{i}.jpg", f"k{i}")) for i, r in enumerate(recs)]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    assert cli.main(["--export", str(tmp_path / "train.json"), "--eval-out", str(tmp_path / "eval.json"),
                     "--from-file", str(tmp_path / "export.json")]) == 0
    coco = json.loads((tmp_path / "train.json").read_text())
    assert coco == json.loads(json.dumps(convert.export_to_coco(tasks)))
    assert len(json.loads((tmp_path / "eval.json").read_text())["images"]) == 2
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(InputError, match="not a Label Studio JSON export"):
        cli.main(["--export", str(tmp_path / "t.json"), "--from-file", str(tmp_path / "bad.json")])


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_prediction_shards_are_read_and_their_images_found(tmp_path, fmt, no_key):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    import numpy as np

    from annotate.push import encode_png

    (tmp_path / "imgs").mkdir()
    recs = []
    for i in range(5):
        rec = make_record(i)
        rec["file"] = f"imgs/{i}.png"  # relative, as `handos predict` writes what it was given
        (tmp_path / rec["file"]).write_bytes(encode_png(np.full((4, 4, 3), i, np.uint8)))
        recs.append(rec)
    writer = RecordWriter(str(tmp_path / "preds"), shard_size=2, fmt=fmt)
    for rec in recs:
        writer.write(rec)
    writer.close()
    # found next to the shard folder's parent (the folder predict ran in) ...
    predicted, to_predict = cli.gather([str(tmp_path / "preds")], None)
    assert to_predict == [] and [r for r, _ in predicted] == recs
    assert [p for _, p in predicted] == [tmp_path / r["file"] for r in recs]
    # ... or under --image-root when the images moved
    (tmp_path / "imgs").rename(tmp_path / "moved")
    with pytest.raises(InputError, match="5 image"):
        cli.gather([str(tmp_path / "preds")], None)
    (tmp_path / "new").mkdir()
    (tmp_path / "moved").rename(tmp_path / "new" / "imgs")  # `file` keeps its imgs/ prefix under the new root
    predicted, _ = cli.gather([str(tmp_path / "preds")], str(tmp_path / "new"))
    assert [p for _, p in predicted] == [tmp_path / "new" / r["file"] for r in recs]
