"""Integration tests against a real Label Studio server (started once per session on 127.0.0.1).

push + read back, idempotent re-push (API and CLI, JSONL shards), resume after the server is stopped
mid-push, wrong token, unreachable server, local-files storage, the ML backend connected to a
project, and export -> training file round trip.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from labelstudio_server import free_port

from annotate import backend, convert, push
from handos.errors import HandosError, RemoteError

pytestmark = pytest.mark.labelstudio
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def hand_images(realdata) -> list[Path]:
    """Six real hand photos (FreiHAND, 224 px): read from ../shared, never copied into the repo."""
    files = sorted((realdata / "freihand" / "images").glob("*.jpg"))[:6]
    assert len(files) == 6
    return files


@pytest.fixture(scope="session")
def hand_records(label_studio_boot, model, hand_images) -> list[dict]:  # noqa: F811
    """The real model's records for the first four hand photos (computed while the server boots)."""
    return [model.record(str(p), file=str(p)) for p in hand_images[:4]]


@pytest.fixture(scope="session")
def client(label_studio):  # noqa: F811
    """A checked SDK client for the session's server."""
    return push.connect(label_studio.url, label_studio.token)


def task_rows(client, project_id: int) -> list:
    """All tasks of a project with predictions and annotations."""
    return list(client.tasks.list(project=project_id, fields="all"))


def as_dict(obj) -> dict:
    """SDK model or dict -> dict."""
    return obj if isinstance(obj, dict) else obj.model_dump()


def test_push_and_read_back(hand_records, label_studio, client, hand_images, model):  # noqa: F811
    t0 = time.perf_counter()
    res = push.push_records(hand_records[:3], hand_images[:3], label_studio.url, label_studio.token,
                            "push and read back", batch_size=2)
    assert res.created == 3 and res.skipped == 0 and len(set(res.task_ids)) == 3
    assert res.url_of_tasks[0].startswith(f"{label_studio.url}/projects/{res.project_id}/")
    rows = {t.id: t for t in task_rows(client, res.project_id)}
    assert sorted(rows) == sorted(res.task_ids)
    for tid, rec, img in zip(res.task_ids, hand_records, hand_images):
        task = rows[tid]
        assert task.data[convert.RECORD_FIELD] == rec  # the full record, 3D included
        preds = [as_dict(p) for p in task.predictions]
        assert len(preds) == 1 and preds[0]["model_version"] == model.version
        assert preds[0]["result"] == convert.record_to_result(rec)
        assert preds[0]["score"] == pytest.approx(convert.record_score(rec))
        served = push._raw_get(client, task.data["image"])
        assert served == img.read_bytes()
    print(f"push of 3 tasks: {time.perf_counter() - t0:.1f} s")


def test_repush_adds_no_duplicates_api_and_cli_with_shards(label_studio, client, hand_records, hand_images, tmp_path):  # noqa: F811
    from handos.io.records import RecordWriter

    first = push.push_records(hand_records[:2], hand_images[:2], label_studio.url, label_studio.token, "idempotent push")
    again = push.push_records(hand_records[:2], hand_images[:2], label_studio.url, label_studio.token, "idempotent push")
    assert again.created == 0 and again.skipped == 2 and again.task_ids == first.task_ids
    # the duplicate check asks the server about the batch's keys only (exact match, unknown keys absent)
    k0 = push.PushItem(record=hand_records[0], image=str(hand_images[0])).key
    assert push.existing_keys(client, first.project_id, [k0, k0[:-1], "0" * 20]) == {k0: first.task_ids[0]}
    # the same predictions as JSONL shards from `handos predict` (issue 9), pushed with the CLI: nothing new,
    # then two more images: only those are added
    shards = tmp_path / "preds"
    writer = RecordWriter(str(shards), shard_size=2)
    for rec in hand_records:
        writer.write(rec)
    writer.close()
    assert len(list(shards.glob("preds-*.jsonl"))) == 2
    env = {"LABEL_STUDIO_API_KEY": label_studio.token}
    out = run_cli([str(shards), "--ls-url", label_studio.url, "--project", "idempotent push", "--state", str(tmp_path / "st"),
                   "--batch-size", "3", "--quiet"], env)
    assert out.returncode == 0, out.stderr
    assert "2 new tasks, 2 already there" in out.stderr
    rows = task_rows(client, first.project_id)
    keys = [t.data[convert.KEY_FIELD] for t in rows]
    assert len(rows) == 4 and len(set(keys)) == 4
    out = run_cli([str(shards), "--ls-url", label_studio.url, "--project", "idempotent push", "--quiet",
                   "--state", str(tmp_path / "st")], env)
    assert out.returncode == 0 and "0 new tasks, 4 already there" in out.stderr
    assert len(task_rows(client, first.project_id)) == 4


def run_cli(args: list[str], env: dict[str, str], subprocess_: bool = False) -> subprocess.CompletedProcess:
    """`python -m handos label ARGS` as a user runs it: in this process (fast), or in a real subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    full_env.update(env)
    if subprocess_:
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        return subprocess.run([sys.executable, "-m", "handos", "label", *args], capture_output=True, text=True,
                              env=full_env, timeout=300, cwd=str(REPO))
    import contextlib
    import io

    from handos.__main__ import main

    saved = dict(os.environ)
    err, out = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(full_env)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(["label", *args])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def test_wrong_token_is_one_clear_line_without_the_key(label_studio, hand_images, tmp_path):  # noqa: F811
    bad = "f" * 40
    out = run_cli([str(hand_images[0]), "--ls-url", label_studio.url, "--project", "never made", "--create",
                   "--state", str(tmp_path)], {"LABEL_STUDIO_API_KEY": bad}, subprocess_=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the API key" in lines[0] and "LABEL_STUDIO_API_KEY" in lines[0]
    assert bad not in out.stderr and label_studio.token not in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(RemoteError, match="refused the API key"):
        push.connect(label_studio.url, bad)


def test_unreachable_server_is_one_clear_line(hand_images, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    out = run_cli([str(hand_images[0]), "--ls-url", url, "--project", "nowhere", "--state", str(tmp_path)],
                  {"LABEL_STUDIO_API_KEY": "0" * 40})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach Label Studio at {url}" in lines[0], out.stderr
    out = run_cli([str(hand_images[0]), "--ls-url", url, "--project", "nowhere"], {})
    assert out.returncode == 2 and "LABEL_STUDIO_API_KEY" in out.stderr


def test_resume_after_server_stopped_mid_push(label_studio, hand_records, hand_images, tmp_path):  # noqa: F811
    client = push.connect(label_studio.url, label_studio.token)
    pid = push.find_or_create_project(client, "resume after a crash", create=True)
    items = [push.PushItem(record=r, image=str(p)) for r, p in zip(hand_records, hand_images)]
    uploads = push.UploadCache(tmp_path / "uploads.jsonl")
    done = []

    def stop_after_first_batch(n: int) -> None:
        done.append(n)
        if len(done) == 1:
            label_studio.stop()  # the server goes away half way through the push

    with pytest.raises(RemoteError, match="cannot reach Label Studio"):
        push.push_items(client, pid, items, batch_size=2, uploads=uploads, on_batch=stop_after_first_batch)
    assert done == [2]
    t0 = time.perf_counter()
    label_studio.start()  # same data dir, same port
    print(f"server restart: {time.perf_counter() - t0:.1f} s")
    client = push.connect(label_studio.url, label_studio.token)
    res = push.push_items(client, pid, items, batch_size=2, uploads=push.UploadCache(tmp_path / "uploads.jsonl"))
    assert res.created == 2 and res.skipped == 2
    rows = task_rows(client, pid)
    keys = [t.data[convert.KEY_FIELD] for t in rows]
    assert len(rows) == 4 and sorted(keys) == sorted(it.key for it in items)
    assert sorted(t.id for t in rows) == sorted(res.task_ids)


def test_local_files_storage(label_studio, client, hand_records, hand_images):  # noqa: F811
    import shutil

    root = label_studio.local_root
    (root / "set1").mkdir(exist_ok=True)
    local = [root / "set1" / p.name for p in hand_images[:2]]
    for src, dst in zip(hand_images, local):
        shutil.copyfile(src, dst)  # a temp folder the server serves, standing in for the user's dataset
    res = push.push_records(hand_records[:2], local, label_studio.url, label_studio.token, "local files",
                            local_files_root=root)
    rows = {t.id: t for t in task_rows(client, res.project_id)}
    for tid, path in zip(res.task_ids, local):
        url = rows[tid].data["image"]
        assert url.startswith("/data/local-files/?d=set1/")
        assert push._raw_get(client, url) == path.read_bytes()


def test_ml_backend_gives_predictions_for_a_new_task(label_studio, client, model, hand_images, caplog):  # noqa: F811
    caplog.set_level("DEBUG")
    fetcher = backend.ImageFetcher(ls_url=label_studio.url, api_key=label_studio.token, max_bytes=5 << 20)
    be = backend.HandosBackend(predictor=model, fetcher=fetcher)
    server = backend.make_server(be, "127.0.0.1", 0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        pid = push.find_or_create_project(client, "ml backend", create=True)
        ml = client.ml.create(url=f"http://127.0.0.1:{port}", project=pid, title="handos")
        assert ml.state == "CO" and ml.model_version == model.version  # health + setup answered
        item = push.PushItem(record={}, image=str(hand_images[5]))
        url = push.upload_images(client, pid, [item])[item.key]
        resp = client.projects.import_tasks(id=pid, request=[{"data": {"image": url}}], return_task_ids=True)
        tid = resp.task_ids[0]
        t0 = time.perf_counter()
        push._http(client, "POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                   json={"selectedItems": {"all": False, "included": [tid]}})
        print(f"ML backend prediction round trip: {time.perf_counter() - t0:.1f} s")
        preds = [as_dict(p) for p in client.tasks.get(id=str(tid)).predictions]
        assert len(preds) == 1 and preds[0]["model_version"] == model.version
        expected = convert.record_to_result(model.record(str(hand_images[5])))
        assert len(expected) > 0, "the model found no hand in a FreiHAND photo"
        got = preds[0]["result"]
        assert [(r["id"], r["type"]) for r in got] == [(r["id"], r["type"]) for r in expected]
        for g, e in zip(got, expected):
            for k in ("x", "y"):
                assert g["value"][k] == pytest.approx(e["value"][k], abs=1e-3)
        assert "/predict" in caplog.text and label_studio.token not in caplog.text  # the key is never logged
    finally:
        server.shutdown()
        server.server_close()


def test_export_round_trip_to_training_file(label_studio, client, hand_records, hand_images, tmp_path):  # noqa: F811
    recs, imgs = hand_records[:4], hand_images[:4]
    res = push.push_records(recs, imgs, label_studio.url, label_studio.token, "export round trip")
    rows = {t.id: t for t in task_rows(client, res.project_id)}
    W = recs[0]["width"]
    # an annotator accepts the first two predictions, moving one joint on the first; the third stays unlabelled
    for n, tid in enumerate(res.task_ids[:2]):
        result = copy.deepcopy(as_dict(rows[tid].predictions[0])["result"])
        if n == 0:
            joint = next(r for r in result if r["type"] == "keypointlabels")
            joint["value"]["x"] += 2.0
            moved = (joint["id"], joint["value"]["keypointlabels"][0])
        client.annotations.create(id=tid, result=result, was_cancelled=False, ground_truth=False)
    client.annotations.create(id=res.task_ids[3], result=[], was_cancelled=True, ground_truth=False)  # the 4th: skipped
    out = run_cli(["--export", str(tmp_path / "train.json"), "--eval-out", str(tmp_path / "eval.json"),
                   "--raw-out", str(tmp_path / "raw.json"), "--ls-url", label_studio.url, "--project", "export round trip"],
                  {"LABEL_STUDIO_API_KEY": label_studio.token})
    assert out.returncode == 0, out.stderr
    coco = json.loads((tmp_path / "train.json").read_text())
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert coco["stats"]["tasks"] == 4 and coco["stats"]["images"] == 2 and coco["stats"]["skipped_unlabelled"] == 1
    assert coco["stats"]["skipped"] == 1 and "1 not yet labelled, 1 skipped" in out.stderr
    assert coco["stats"]["orphan_joints"] == 0 and coco["stats"]["duplicate_joints"] == 0
    by_task = {img["ls_task_id"]: img for img in coco["images"]}
    for n, (tid, rec) in enumerate(zip(res.task_ids[:2], recs)):
        img = by_task[tid]
        assert img["handos_prediction"] == rec and img["file_name"] == rec["file"] and img["width"] == rec["width"]
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        assert len(anns) == len(rec["hands"])
        for ann, hand in zip(anns, rec["hands"]):
            assert ann["handos_prediction"] == hand and ann["handedness"] == hand["handedness"]
            k = np.asarray(ann["keypoints"]).reshape(21, 3)
            want = np.asarray(hand["keypoints_2d"], dtype=np.float64)
            inside = (want[:, 0] >= 0) & (want[:, 0] <= rec["width"]) & (want[:, 1] >= 0) & (want[:, 1] <= rec["height"])
            if n == 0 and ann["ls_region_id"] == moved[0].split("k")[0]:
                j = int(moved[0].split("k")[1])
                want[j, 0] += 2.0 * W / 100
            np.testing.assert_allclose(k[inside, :2], want[inside], atol=1e-4)
            assert (k[inside, 2] == 2).all() and (k[~inside, 2] == 0).all()
    # the exported annotation keeps each joint tied to its box
    ann_results = [r for t in raw for a in t.get("annotations", []) for r in a["result"] if r["type"] == "keypointlabels"]
    assert ann_results and all(r.get("parentID") == r["id"].split("k")[0] for r in ann_results)
    # tasks nobody annotated can be taken as predicted (the export names predictions by id; they are fetched)
    out = run_cli(["--export", str(tmp_path / "all.json"), "--include-predictions", "--ls-url", label_studio.url,
                   "--project", "export round trip"], {"LABEL_STUDIO_API_KEY": label_studio.token})
    assert out.returncode == 0, out.stderr
    everything = json.loads((tmp_path / "all.json").read_text())
    assert everything["stats"]["images"] == 3 and [i["source"] for i in everything["images"]].count("prediction") == 1
    assert res.task_ids[3] not in [i["ls_task_id"] for i in everything["images"]]  # skipped: not a 0-hand image
    # the same conversion from a downloaded export file, without the server
    out = run_cli(["--export", str(tmp_path / "train2.json"), "--from-file", str(tmp_path / "raw.json")], {})
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "train2.json").read_text()) == coco
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert len(ev["images"]) == 2 and all(h["handedness"] in ("left", "right") for i in ev["images"] for h in i["hands"])


def test_backend_refuses_foreign_hosts_and_big_images(label_studio, client, tmp_path):  # noqa: F811
    f = backend.ImageFetcher(ls_url=label_studio.url, api_key=label_studio.token, max_bytes=1000)
    with pytest.raises(HandosError, match="refusing"):
        f.fetch("http://example.com/hand.jpg")
    with pytest.raises(HandosError, match="refusing"):
        f.fetch(f"http://127.0.0.1:{free_port()}/data/upload/1/x.jpg")  # same host, other port
    big = tmp_path / "big.png"
    big.write_bytes(push.encode_png((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)))
    pid = push.find_or_create_project(client, "size limit", create=True)
    item = push.PushItem(record={}, image=str(big))
    url = push.upload_images(client, pid, [item])[item.key]
    with pytest.raises(HandosError, match="limit"):
        f.fetch(url)
    assert backend.ImageFetcher(ls_url=label_studio.url, api_key=label_studio.token).fetch(url) == big.read_bytes()
    with pytest.raises(HandosError, match="rejected the configured LABEL_STUDIO_API_KEY"):  # a real rejection
        backend.ImageFetcher(ls_url=label_studio.url, api_key="f" * 40).fetch(url)
    for path in ("/api/projects", "/data/local-files/?d=../../etc/passwd"):  # refused before any request
        with pytest.raises(HandosError, match="refusing") as err:
            f.fetch(path)
        assert "API_KEY" not in str(err.value)


def test_cli_predicts_images_keeps_them_and_continues(label_studio, client, hand_images, tmp_path):  # noqa: F811
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in hand_images[:2]:
        shutil.copyfile(p, photos / p.name)
    (photos / "broken.jpg").write_bytes(b"")  # a 0-byte file: reported, never pushed, the rest goes on
    env = {"LABEL_STUDIO_API_KEY": label_studio.token}
    args = [str(photos), "--ls-url", label_studio.url, "--project", "cli from images", "--create",
            "--state", str(tmp_path / "state"), "--quiet"]
    out = run_cli(args, env)
    assert out.returncode == 1, out.stderr  # 1: some input could not be read
    assert "1 image(s) could not be read" in out.stderr and "2 new tasks" in out.stderr
    preds = (tmp_path / "state" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 2  # the model's output is kept locally
    out = run_cli(args, env)
    assert "0 new tasks, 2 already there" in out.stderr
    assert (tmp_path / "state" / "predictions.jsonl").read_text().splitlines() == preds  # not predicted again
    pid = push.find_or_create_project(client, "cli from images", create=False)
    assert len(task_rows(client, pid)) == 2


def test_project_lookup(label_studio, client):  # noqa: F811
    from handos.errors import InputError

    pid = push.find_or_create_project(client, "lookup test", create=True)
    assert push.find_or_create_project(client, "lookup test", create=False) == pid
    assert push.find_or_create_project(client, str(pid), create=False) == pid
    with pytest.raises(InputError, match="pass --create"):
        push.find_or_create_project(client, "no such project here", create=False)
    with pytest.raises(InputError, match="3 or more"):
        push.find_or_create_project(client, "ab", create=True)
    other = client.projects.create(title="text project", label_config='<View><Text name="t" value="$t"/>'
                                   '<Choices name="c" toName="t"><Choice value="a"/></Choices></View>')
    with pytest.raises(InputError, match="another labeling config"):
        push.find_or_create_project(client, "text project", create=True)
    with pytest.raises(RemoteError, match="404"):
        push.find_or_create_project(client, str(other.id + 1000), create=False)


def test_push_an_array_image(label_studio, client, hand_records, hand_images):  # noqa: F811
    import io

    from PIL import Image

    from handos.io.images import load_image

    rgb = load_image(str(hand_images[0])).rgb  # (H, W, 3) uint8, as the demo holds it
    res = push.push_records([hand_records[0]], [rgb], label_studio.url, label_studio.token, "array images")
    again = push.push_records([hand_records[0]], [rgb.copy()], label_studio.url, label_studio.token, "array images")
    assert res.created == 1 and again.created == 0 and again.task_ids == res.task_ids
    task = client.tasks.get(id=str(res.task_ids[0]))
    served = np.asarray(Image.open(io.BytesIO(push._raw_get(client, task.data["image"]))).convert("RGB"))
    np.testing.assert_array_equal(served, rgb)  # lossless PNG upload
