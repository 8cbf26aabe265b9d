"""The ML backend trains from annotations: webhooks -> export -> fine-tune (child process) -> validated switch.

Units run a fake trainer (a small script written here, standing in for `python -m handos train
--finetune`) whose metrics, exit code and timing each test chooses; the integration test submits
annotations through a real Label Studio and lets it deliver its webhooks to the backend.
"""
from __future__ import annotations

import base64
import copy
import importlib.util
import json
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_annotate_backend import RecordingPredictor, call
from test_annotate_convert import make_record

from annotate import backend, convert, push, training

FAKE_TRAINER = textwrap.dedent('''
    """Stand-in for `python -m handos train --finetune DATA --out DIR [--weights W]`, steered by a control file."""
    import argparse, json, os, pathlib, signal, time
    p = argparse.ArgumentParser()
    p.add_argument("--finetune"); p.add_argument("--out"); p.add_argument("--weights"); p.add_argument("--control")
    a = p.parse_args()
    c = json.loads(pathlib.Path(a.control).read_text())
    out = pathlib.Path(a.out); out.mkdir(parents=True, exist_ok=True)
    (out / "started").write_text(json.dumps({"weights": a.weights, "data": a.finetune}))
    print("fake trainer: training on", len(json.loads(pathlib.Path(a.finetune).read_text())["images"]), "images", flush=True)
    while c.get("wait_for") and not pathlib.Path(c["wait_for"]).exists():
        time.sleep(0.05)
    if c.get("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    if c.get("exit"):
        print("fake trainer: out of memory", flush=True)
        raise SystemExit(c["exit"])
    (out / "fake.weights").write_text("w")
    (out / "finetune_report.json").write_text(json.dumps({"data": a.finetune, "split": {"train": 3, "val": 1},
        "steps": 2, "seconds": 0.1, "before": c["before"], "after": c["after"]}))
''')


def metrics(pck: float | None, pa: float | None = None) -> dict:
    """A metrics dict with the eval keys."""
    return {"pck2d@0.05": pck, "pck2d@0.1": pck, "pa_mpjpe_mm": pa, "recall": 1.0}


class FakeModel(RecordingPredictor):
    """What the loader gives for a version folder (checks that the trainer wrote its weights)."""

    def __init__(self, weights_dir: str) -> None:
        super().__init__()
        assert (Path(weights_dir) / "fake.weights").exists(), weights_dir
        self.version = f"fake-{Path(weights_dir).parent.name}"


def png_uri(seed: int) -> str:
    """A small PNG as a data URI (an image only Label Studio has)."""
    rgb = (np.random.default_rng(seed).random((48, 64, 3)) * 255).astype(np.uint8)
    return "data:image/png;base64," + base64.b64encode(push.encode_png(rgb)).decode()


def annotated_tasks(n: int) -> list[dict]:
    """`n` exported tasks, each with a submitted annotation (the prediction accepted)."""
    tasks = []
    for i in range(n):
        rec = make_record(i, W=64, H=48, n=1)
        rec["file"] = None
        task = convert.record_to_task(rec, png_uri(i), f"key{i}")
        task["id"] = i + 1
        task["annotations"] = [{"id": 100 + i, "result": copy.deepcopy(task["predictions"][0]["result"]),
                                "was_cancelled": False, "updated_at": "2026-01-01T00:00:00Z"}]
        tasks.append(task)
    return tasks


def event(ann_id: int, action: str = "ANNOTATION_CREATED", project: int = 3, cancelled: bool = False) -> dict:
    """A Label Studio-shaped webhook payload (action, annotation, task, project)."""
    return {"action": action, "annotation": {"id": ann_id, "task": ann_id, "project": project, "was_cancelled": cancelled,
                                             "result": []},
            "task": {"id": ann_id, "project": project, "data": {}}, "project": {"id": project, "title": "hands"}}


class Rig:
    """A backend on a free port with a Trainer running the fake trainer; `control` steers the next run."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_every: int = 3) -> None:
        self.tmp = tmp_path
        self.script = tmp_path / "fake_trainer.py"
        self.script.write_text(FAKE_TRAINER)
        self.control_path = tmp_path / "control.json"
        self.control(before=metrics(0.5, 20.0), after=metrics(0.6, 18.0))
        self.exports: list[int] = []

        def fake_export(client, project_id):
            self.exports.append(project_id)
            return annotated_tasks(4)

        monkeypatch.setattr(push, "export_tasks", fake_export)
        self.versions_dir = tmp_path / "versions"
        self.train_every = train_every
        self.base = RecordingPredictor()
        self.start()

    def control(self, **c) -> None:
        """What the fake trainer does on its next run."""
        self.control_path.write_text(json.dumps(c))

    def start(self) -> None:
        """(Re)start the backend process-equivalent: a new Trainer on the same versions folder."""
        self.trainer = training.Trainer(self.versions_dir, train_every=self.train_every,
                                        command=[sys.executable, str(self.script)],
                                        extra_args=["--control", str(self.control_path)], base_weights="BASE",
                                        loader=FakeModel, client_factory=lambda: object())
        fetcher = backend.ImageFetcher(ls_url="http://127.0.0.1:9", api_key="k" * 40)
        self.be = backend.HandosBackend(predictor=self.base, fetcher=fetcher)
        self.be.trainer = self.trainer
        self.trainer.attach(self.be)
        self.server = backend.make_server(self.be, "127.0.0.1", 0, basic_auth=None)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        """Shut the HTTP server and the trainer down."""
        self.trainer.close()
        self.server.shutdown()
        self.server.server_close()

    def post(self, body: dict) -> dict:
        """POST /webhook; the JSON answer (status 200 asserted)."""
        status, out = call(self.url, "/webhook", body)
        assert status == 200, out
        return out

    def versions(self) -> dict:
        """GET /versions."""
        status, out = call(self.url, "/versions")
        assert status == 200
        return out

    def predict_version(self) -> str:
        """The model_version /predict answers with (one data-URI task)."""
        status, out = call(self.url, "/predict", {"tasks": [{"id": 1, "data": {"image": png_uri(9)}}]})
        assert status == 200, out
        return out["results"][0]["model_version"]


@pytest.fixture()
def rig(tmp_path, monkeypatch):
    r = Rig(tmp_path, monkeypatch)
    yield r
    r.stop()


def test_judge_accepts_no_worse_and_rejects_worse():
    ok, why = training.judge({"split": {"val": 5}, "before": metrics(0.5, 20.0), "after": metrics(0.5, 20.0)})
    assert ok and "no worse" in why
    assert training.judge({"before": metrics(0.5, None), "after": metrics(0.7, 30.0)})[0]  # PA only where both exist
    ok, why = training.judge({"split": {"val": 5}, "before": metrics(0.5, 20.0), "after": metrics(0.49, 10.0)})
    assert not ok and why == "PCK2D@0.05 fell from 0.5000 to 0.4900 on 5 validation images"
    ok, why = training.judge({"before": metrics(0.5, 20.0), "after": metrics(0.6, 21.0)})
    assert not ok and "PA-MPJPE rose from 20.00 to 21.00 mm" in why
    assert not training.judge({"before": metrics(None), "after": metrics(0.6)})[0]
    assert not training.judge({"after": metrics(0.6)})[0]


def test_webhook_payloads_count_distinct_submitted_annotations(rig):
    rig.control(before=metrics(0.5), after=metrics(0.6), wait_for=str(rig.tmp / "never"))
    assert rig.post(event(1))["pending"] == 1
    assert rig.post(event(1, "ANNOTATION_UPDATED"))["pending"] == 1  # the same annotation again
    assert rig.post(event(2, cancelled=True))["pending"] == 1  # a skipped task is no annotation
    assert rig.post({"action": "TASKS_CREATED", "tasks": [{"id": 5}], "project": {"id": 3}})["status"] == "ignored"
    assert not rig.trainer.running and rig.versions()["pending"] == 1
    assert json.loads((rig.versions_dir / "state.json").read_text())["pending"] == ["3:1"]  # persisted


def test_a_better_version_is_served_after_n_annotations(rig):
    v0 = rig.predict_version()
    assert v0 == "stand-in-1"
    for i in range(2):
        assert rig.post(event(i))["training"] is False
    out = rig.post(event(2))
    assert out["status"] == "training" and out["training"] == "v001"
    assert rig.trainer.wait(60)
    vs = rig.versions()
    assert vs["serving"] == "v001" and vs["versions"][0] == "fake-v001-v001" == rig.predict_version()
    (h,) = vs["history"]
    assert h["status"] == "serving" and h["metrics"]["after"]["pck2d@0.05"] == 0.6 and "no worse" in h["reason"]
    assert h["export"]["images"] == 4 and rig.exports == [3]
    vdir = rig.versions_dir / "v001"
    started = json.loads((vdir / "weights" / "started").read_text())
    assert started["weights"] == "BASE"  # the run starts from the serving weights: "before" is the serving model
    coco = json.loads((vdir / "data" / "train.json").read_text())
    assert all(Path(i["file_name"]).is_file() for i in coco["images"])  # LS-only images fetched for the trainer
    assert (vdir / "data" / "eval.json").exists() and "fake trainer: training on 4 images" in (vdir / "train.log").read_text()
    # the next run starts from v001's weights
    rig.control(before=metrics(0.6, 18.0), after=metrics(0.6, 18.0))
    for i in range(10, 13):
        rig.post(event(i))
    assert rig.trainer.wait(60)
    assert json.loads((rig.versions_dir / "v002" / "weights" / "started").read_text())["weights"] == str(vdir / "weights")
    vs = rig.versions()
    assert [h["status"] for h in vs["history"]] == ["superseded", "serving"] and rig.predict_version() == "fake-v002-v002"


def test_a_worse_version_is_rejected_and_the_old_one_kept(rig, caplog):
    caplog.set_level("INFO")
    rig.control(before=metrics(0.5, 20.0), after=metrics(0.45, 15.0))
    for i in range(3):
        rig.post(event(i))
    assert rig.trainer.wait(60)
    vs = rig.versions()
    (h,) = vs["history"]
    assert h["status"] == "rejected" and vs["serving"] == "base" and rig.predict_version() == "stand-in-1"
    assert h["reason"] == "kept the base model: PCK2D@0.05 fell from 0.5000 to 0.4500 on 1 validation images"
    assert "v001 rejected: kept the base model: PCK2D@0.05 fell" in caplog.text
    assert (rig.versions_dir / "v001" / "weights" / "fake.weights").exists()  # kept on disk to look at
    rig.control(before=metrics(0.5, 20.0), after=metrics(0.55, 21.0))
    call(rig.url, "/train", {})
    assert rig.trainer.wait(60)
    h = rig.versions()["history"][-1]
    assert h["status"] == "rejected" and "PA-MPJPE rose from 20.00 to 21.00 mm" in h["reason"]


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_failed_or_killed_run_changes_nothing(rig, how):
    rig.control(**{how: 3 if how == "exit" else True})
    for i in range(3):
        rig.post(event(i))
    assert rig.trainer.wait(60)
    (h,) = rig.versions()["history"]
    assert h["status"] == "failed" and rig.predict_version() == "stand-in-1"
    want = "the trainer exited with 3 (fake trainer: out of memory)" if how == "exit" else "the trainer was killed by SIGKILL"
    assert h["reason"].startswith(want)
    assert (rig.versions_dir / "v001" / "data" / "train.json").exists()  # the export stays
    assert rig.versions()["pending"] == (3 if how == "kill" else 0)  # a kill is no verdict: its annotations count again
    # the next run starts clean in a new folder
    rig.control(before=metrics(0.5), after=metrics(0.5))
    for i in range(3, 6):
        rig.post(event(i))
    assert rig.trainer.wait(60)
    assert rig.versions()["serving"] == "v002" and rig.predict_version() == "fake-v002-v002"


def test_predict_answers_during_training_and_webhooks_count_for_the_next_run(rig):
    gate = rig.tmp / "go"
    rig.control(before=metrics(0.5), after=metrics(0.7), wait_for=str(gate))
    for i in range(3):
        rig.post(event(i))
    deadline = time.monotonic() + 30
    while not (rig.versions_dir / "v001" / "weights" / "started").exists():
        assert time.monotonic() < deadline, (rig.versions_dir / "v001" / "train.log").read_text()
        time.sleep(0.05)
    t0 = time.perf_counter()
    assert rig.predict_version() == "stand-in-1"  # served by the old model while the trainer runs
    assert time.perf_counter() - t0 < 5
    vs = rig.versions()
    assert vs["training"] == "v001" and vs["history"][0]["status"] == "training"
    for i in range(3, 6):  # three more during the run: they start the next run once this one ends
        out = rig.post(event(i))
        assert out["training"] is True and out.get("status") == "ok"
    assert call(rig.url, "/train", {})[1]["status"] == "busy"  # one run at a time
    rig.control(before=metrics(0.7), after=metrics(0.7), wait_for=str(gate))
    gate.write_text("go")
    assert rig.trainer.wait(60)
    vs = rig.versions()
    assert [h["name"] for h in vs["history"]] == ["v001", "v002"] and vs["serving"] == "v002"
    assert vs["history"][1]["trigger"].startswith("3 new annotations") and vs["pending"] == 0


def test_state_survives_a_restart_and_an_interrupted_run(rig, tmp_path, monkeypatch):
    for i in range(3):
        rig.post(event(i))
    assert rig.trainer.wait(60) and rig.predict_version() == "fake-v001-v001"
    rig.control(before=metrics(0.6), after=metrics(0.9), wait_for=str(tmp_path / "never"))
    for i in range(3, 6):
        rig.post(event(i))
    deadline = time.monotonic() + 30
    while not (rig.versions_dir / "v002" / "weights" / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the backend dies mid-run: the state file still says "training"; the trainer is left to be stopped
    state = json.loads((rig.versions_dir / "state.json").read_text())
    assert state["serving"] == "v001" and state["versions"][1]["status"] == "training"
    rig.server.shutdown()
    rig.server.server_close()
    proc = rig.trainer._proc
    rig.trainer._closing = True
    proc.kill()
    rig.trainer._thread.join(30)  # its record of the kill is then overwritten: the backend died first
    (rig.versions_dir / "state.json").write_text(json.dumps(state))  # as it was when the backend died
    rig.start()
    vs = rig.versions()
    assert vs["serving"] == "v001" and rig.predict_version() == "fake-v001-v001"  # the last accepted version
    assert [h["status"] for h in vs["history"]] == ["serving", "failed"]
    assert vs["history"][1]["reason"].startswith("interrupted") and vs["pending"] == 3  # its annotations count again
    assert (rig.versions_dir / "v002" / "data" / "train.json").exists()
    rig.control(before=metrics(0.6), after=metrics(0.6))
    rig.post(event(6))
    assert rig.trainer.wait(60)
    assert rig.versions()["serving"] == "v003" and rig.predict_version() == "fake-v003-v003"
    # a serving version whose folder vanished: back to the base model, said so
    rig.stop()
    import shutil

    shutil.rmtree(rig.versions_dir / "v003" / "weights")
    rig.start()
    vs = rig.versions()
    assert vs["serving"] == "base" and rig.predict_version() == "stand-in-1"
    assert vs["history"][-1]["status"] == "failed" and "could not be loaded at restart" in vs["history"][-1]["reason"]


def test_without_versions_dir_webhooks_are_acknowledged_only(tmp_path):
    be = backend.HandosBackend(predictor=RecordingPredictor(), fetcher=backend.ImageFetcher())
    server = backend.make_server(be, "127.0.0.1", 0, basic_auth=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert call(url, "/webhook", event(1))[0] == 200
        assert call(url, "/versions") == (200, {"versions": ["stand-in-1"]})
    finally:
        server.shutdown()
        server.server_close()


def test_backend_options_build_a_trainer(tmp_path):
    args = backend.build_parser().parse_args(["--versions-dir", str(tmp_path / "v"), "--train-every", "5",
                                              "--train-args", "--steps 10 --foundation frozen", "--train-project", "4"])
    t = training.trainer_from_args(args)
    assert t.train_every == 5 and t.extra_args == ["--steps", "10", "--foundation", "frozen"] and t.project == 4
    assert t.command == [sys.executable, "-m", "handos", "train"]
    assert t.on_webhook(event(1, project=9))[1]["status"] == "ignored"
    with pytest.raises(training.TrainingError):
        training.Trainer(tmp_path / "v", train_every=0)


# --- against a real Label Studio ----------------------------------------------------------------------
# the real fine-tuning command (`python -m handos train --finetune`, handos.train.finetune) with tiny settings;
# the fake trainer stands in only in a tree that does not have the fine-tuning module yet
REAL_TRAINER_ARGS = ["--steps", "2", "--val-frac", "0.34", "--device", "cpu", "--no-progress"]
USE_REAL_TRAINER = importlib.util.find_spec("handos.train.finetune") is not None


def test_label_studio_webhooks_train_and_switch_the_served_version(label_studio, model, realdata, tmp_path, monkeypatch):
    import handos

    client = push.connect(label_studio.url, label_studio.token)
    images = sorted((realdata / "freihand" / "images").glob("*.jpg"))[:4]
    assert len(images) == 4
    records = [model.record(str(p), file=str(p)) for p in images]
    res = push.push_records(records, images, label_studio.url, label_studio.token, "training loop", create=True)
    if USE_REAL_TRAINER:
        command, extra = [sys.executable, "-m", "handos", "train"], REAL_TRAINER_ARGS
    else:
        script = tmp_path / "fake_trainer.py"
        script.write_text(FAKE_TRAINER)
        (tmp_path / "control.json").write_text(json.dumps({"before": metrics(0.5, 20.0), "after": metrics(0.5, 20.0)}))
        command, extra = [sys.executable, str(script)], ["--control", str(tmp_path / "control.json")]
    trainer = training.Trainer(tmp_path / "versions", train_every=3, command=command, extra_args=extra,
                               loader=(lambda d: handos.load(weights=d, device="cpu")) if USE_REAL_TRAINER else FakeModel)
    be = backend.HandosBackend(predictor=model, fetcher=backend.ImageFetcher(ls_url=label_studio.url,
                                                                            api_key=label_studio.token))
    be.trainer = trainer
    trainer.attach(be)
    server = backend.make_server(be, "127.0.0.1", 0, basic_auth=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        # connecting the backend makes Label Studio add a webhook to URL/webhook for all events
        client.ml.create(url=url, project=res.project_id, title="handos trains")
        hooks = [as_dict(h) for h in client.webhooks.list(project=res.project_id)]
        assert any(h["url"] == url + "/webhook" for h in hooks), hooks
        tasks = {t.id: t for t in client.tasks.list(project=res.project_id, fields="all")}
        for n, tid in enumerate(res.task_ids[:3]):  # three annotators accept the predictions: Label Studio posts the events
            result = copy.deepcopy(as_dict(tasks[tid].predictions[0])["result"])
            client.annotations.create(id=tid, result=result, was_cancelled=False, ground_truth=False)
            if n < 2:
                assert trainer.versions()["pending"] == n + 1 and not trainer.running
        deadline = time.monotonic() + 30
        while not trainer.state["versions"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert trainer.state["versions"], "no run started after 3 annotation webhooks"
        t0 = time.perf_counter()
        assert trainer.wait(480), "the fine-tuning run did not finish"
        print(f"fine-tuning run ({'real' if USE_REAL_TRAINER else 'FAKE'} trainer): {time.perf_counter() - t0:.1f} s")
        vs = call(url, "/versions")[1]
        (h,) = vs["history"]
        log_text = Path(h["path"], "train.log").read_text()[-2000:]
        assert h["status"] == "serving", (h["reason"], log_text)
        assert vs["serving"] == "v001" and vs["versions"][0].endswith("-v001") and vs["versions"][0] == be.version
        assert h["export"]["images"] == 3 and h["metrics"]["split"]["val"] >= 1
        assert label_studio.token not in log_text
        # Label Studio now gets the new version's predictions for the fourth task
        push._http(client, "POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": res.project_id},
                   json={"selectedItems": {"all": False, "included": [res.task_ids[3]]}})
        preds = [as_dict(p) for p in client.tasks.get(id=str(res.task_ids[3])).predictions]
        assert any(p["model_version"] == be.version for p in preds), [p["model_version"] for p in preds]
    finally:
        trainer.close()
        server.shutdown()
        server.server_close()


def as_dict(obj) -> dict:
    """SDK model or dict -> dict."""
    return obj if isinstance(obj, dict) else obj.model_dump()
