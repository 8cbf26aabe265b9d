"""The ML backend's HTTP API and its fetch policy, without a Label Studio server.

The predictor is injected: a stand-in that records what it was given here (the HTTP layer and fetch
rules are under test); tests/test_annotate_labelstudio.py runs the real model behind a real server.
"""
from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from annotate import backend, convert, push
from handos.errors import InputError
from test_annotate_convert import make_record


class RecordingPredictor:
    """Returns a fixed-shape record for the image size it gets, and remembers the images."""

    version = "stand-in-1"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def record(self, image, camera=None, file=None, include_vertices=False) -> dict:
        h, w = image.shape[:2]
        self.seen.append((w, h))
        rec = make_record(1, W=w, H=h, n=1)
        rec["file"], rec["model"] = file, self.version
        return rec


@pytest.fixture()
def served(tmp_path):
    """A backend on a free 127.0.0.1 port reading local files under tmp_path/root; yields (url, predictor)."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    rgb = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    (root / "a" / "img.png").write_bytes(push.encode_png(rgb))
    (tmp_path / "secret.png").write_bytes(push.encode_png(rgb))
    pred = RecordingPredictor()
    be = backend.HandosBackend(predictor=pred, fetcher=backend.ImageFetcher(local_root=root, max_bytes=1 << 20))
    server = backend.make_server(be, "127.0.0.1", 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pred, rgb
    server.shutdown()
    server.server_close()


def call(url: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """GET (body None) or POST JSON; (status, JSON)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_health_setup_webhook(served):
    url, pred, _ = served
    assert call(url, "/health") == (200, {"status": "UP", "model_class": "handos", "model_version": "stand-in-1"})
    assert call(url, "/")[0] == 200
    status, body = call(url, "/setup", {"project": "1.1700000000", "schema": convert.label_config(),
                                        "hostname": "http://evil.example", "access_token": "x"})
    assert (status, body) == (200, {"model_version": "stand-in-1"})
    assert call(url, "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 1}})[0] == 200
    assert call(url, "/nope")[0] == 404


def test_predict_returns_one_prediction_per_task(served):
    url, pred, rgb = served
    data_uri = "data:image/png;base64," + base64.b64encode(push.encode_png(rgb[:20, :30])).decode()
    tasks = [{"id": 1, "data": {"image": "/data/local-files/?d=a/img.png"}},
             {"id": 2, "data": {"image": data_uri}},
             {"id": 3, "data": {"image": "http://example.com/x.jpg"}}]
    status, body = call(url, "/predict", {"tasks": tasks, "label_config": convert.label_config(), "project": "1.1",
                                          "params": {"context": None}})
    assert status == 200 and len(body["results"]) == 3
    assert pred.seen == [(64, 48), (30, 20)]  # the third task was refused before reaching the model
    first = body["results"][0]
    assert first["model_version"] == "stand-in-1"
    assert first["result"] == convert.record_to_result(pred.record(rgb))
    assert body["results"][2]["result"] == []


def test_predict_reads_the_image_field_the_config_names(served):
    url, pred, _ = served
    config = convert.label_config().replace('value="$image"', 'value="$photo"')
    status, body = call(url, "/predict", {"tasks": [{"id": 1, "data": {"photo": "/data/local-files/?d=a/img.png"}}],
                                          "label_config": config})
    assert status == 200 and len(body["results"][0]["result"]) > 0


def test_predict_errors_are_clear(served):
    url, _, _ = served
    status, body = call(url, "/predict", {"tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=../secret.png"}}]})
    assert status == 422 and "outside --local-root" in body["error"]
    status, body = call(url, "/predict", {"tasks": [{"id": 1, "data": {"image": "/data/upload/1/x.jpg"}}]})
    assert status == 422 and "no --ls-url" in body["error"]
    assert call(url, "/predict", {"nothing": 1})[0] == 400
    req = urllib.request.Request(url + "/predict", data=b"not json", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400


def test_fetcher_allows_only_the_configured_label_studio(tmp_path):
    f = backend.ImageFetcher(ls_url="http://127.0.0.1:8080", api_key="k" * 40, max_bytes=100)
    for url in ("http://example.com/a.jpg", "http://127.0.0.1:9999/data/upload/a.jpg", "https://127.0.0.1:8080/a.jpg",
                "file:///etc/passwd", "ftp://127.0.0.1:8080/a.jpg"):
        with pytest.raises(InputError, match="refusing"):
            f.fetch(url)
    assert backend.host_id("LOCALHOST") == backend.host_id("127.0.0.1") == backend.host_id("[::1]") != backend.host_id("10.0.0.1")
    with pytest.raises(InputError, match="MB"):
        f.fetch("data:image/png;base64," + base64.b64encode(b"x" * 500).decode())
    assert "k" * 40 not in repr(f)


def test_image_field_parsing():
    assert backend.image_field(convert.label_config()) == "image"
    assert backend.image_field('<View><Image name="i" value="$img_url"/></View>') == "img_url"
    assert backend.image_field(None) == "image"
