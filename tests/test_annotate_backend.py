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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from test_annotate_convert import make_record

from annotate import backend, convert, push
from handos.errors import InputError, RemoteError


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


def call(url: str, path: str, body: dict | None = None, auth: tuple[str, str] | None = None,
         headers_out: dict | None = None) -> tuple[int, dict]:
    """GET (body None) or POST JSON, with HTTP Basic `auth` if given; (status, JSON). Response headers into headers_out."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            if headers_out is not None:
                headers_out.update(r.headers)
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        if headers_out is not None:
            headers_out.update(err.headers)
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
    assert status == 422 and "'..'" in body["error"]
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


GOOD_KEY, BAD_KEY = "a1" * 20, "b2" * 20


@pytest.fixture()
def fake_ls():
    """A stand-in Label Studio on 127.0.0.1: serves a PNG on every path, 401 for a wrong token, 403 for
    d=forbidden.png (storage refusing a valid key); yields (url, requests seen as (path, Authorization))."""
    png = push.encode_png(np.full((24, 32, 3), 90, np.uint8))
    seen: list[tuple[str, str | None]] = []

    class LS(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            auth = self.headers.get("Authorization")
            seen.append((self.path, auth))
            if auth != f"Token {GOOD_KEY}":
                status, body = 401, b'{"detail": "Invalid token."}'
            elif "forbidden.png" in self.path:
                status, body = 403, b""
            else:
                status, body = 200, png
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), LS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_the_key_goes_to_label_studio_media_paths_only(fake_ls):
    url, seen = fake_ls
    f = backend.ImageFetcher(ls_url=url, api_key=GOOD_KEY)
    media = ["/data/upload/3/5a1b-hand.png", f"{url}/data/local-files/?d=set1/a%20b.jpg", "/tasks/7/resolve/?fileuri=czM6Ly9i",
             f"{url}/projects/2/presign/?fileuri=czM6Ly9i", "/storage-data/uploaded/?filepath=upload/3/x.png"]
    for u in media:
        assert f.fetch(u).startswith(b"\x89PNG")
    assert [p for p, _ in seen] == [u.removeprefix(url) for u in media]
    assert all(a == f"Token {GOOD_KEY}" for _, a in seen)
    seen.clear()
    for u in ("/api/projects", f"{url}/api/tasks/1", "/api/current-user/token", "/data/upload/../../api/projects",
              "/data/upload/%2e%2e/%2e%2e/api/projects", "/data/local-files/../api/projects?d=a.jpg", "/data/uploads/x",
              "/tasks/7/resolve/", "/storage-data/uploaded/?filepath=avatars/a.png", f"{url}/user/account/",
              "/projects/1/import"):
        with pytest.raises(InputError, match="refusing") as err:
            f.fetch(u)
        assert GOOD_KEY not in str(err.value)
    for u in ("http://example.com/data/upload/1/x.png", f"http://user:pw@{url.removeprefix('http://')}/data/upload/1/x.png",
              f"http://127.0.0.1:{int(url.rsplit(':', 1)[1]) + 1}/data/upload/1/x.png"):
        with pytest.raises(InputError, match="refusing to fetch images from"):
            f.fetch(u)
    assert seen == []  # nothing refused reached the server, so the key went nowhere else


def test_label_studio_under_a_path_prefix(fake_ls):
    url, seen = fake_ls
    f = backend.ImageFetcher(ls_url=url + "/ls", api_key=GOOD_KEY)
    f.fetch("/ls/data/upload/1/x.png")
    f.fetch(url + "/ls/data/local-files/?d=a.png")
    assert [p for p, _ in seen] == ["/ls/data/upload/1/x.png", "/ls/data/local-files/?d=a.png"]
    with pytest.raises(InputError, match="refusing"):
        f.fetch(url + "/api/projects")
    with pytest.raises(InputError, match="refusing"):
        f.fetch("/ls/api/projects")


def test_path_traversal_is_a_bad_path_not_a_key_problem(fake_ls, tmp_path):
    url, seen = fake_ls
    for root in (None, tmp_path):
        f = backend.ImageFetcher(ls_url=url, api_key=GOOD_KEY, local_root=root)
        for d in ("../../etc/passwd", "a/../../b.png", "/etc/passwd", "%2Fetc%2Fpasswd", "..%2Fsecret.png", "C:/x.png",
                  "a\\..\\..\\b.png", ""):
            with pytest.raises(InputError, match="refusing") as err:
                f.fetch(f"/data/local-files/?d={d}")
            assert "key" not in str(err.value).lower()
    assert seen == []


def test_a_rejected_key_is_reported_as_such_and_only_then(fake_ls):
    url, seen = fake_ls
    with pytest.raises(RemoteError, match="rejected the configured LABEL_STUDIO_API_KEY") as err:
        backend.ImageFetcher(ls_url=url, api_key=BAD_KEY).fetch("/data/upload/1/x.png")
    assert BAD_KEY not in str(err.value)
    with pytest.raises(RemoteError) as err:  # the key is fine, the storage refuses this file
        backend.ImageFetcher(ls_url=url, api_key=GOOD_KEY).fetch("/data/local-files/?d=forbidden.png")
    assert "HTTP 403" in str(err.value) and "key is valid" in str(err.value) and "rejected" not in str(err.value)
    with pytest.raises(RemoteError, match="no LABEL_STUDIO_API_KEY"):
        backend.ImageFetcher(ls_url=url).fetch("/data/upload/1/x.png")
    assert {p for p, _ in seen} <= {"/data/upload/1/x.png", "/data/local-files/?d=forbidden.png",
                                    "/api/current-user/whoami"}


def test_predict_refuses_non_media_paths_with_a_4xx(fake_ls):
    url, seen = fake_ls
    be = backend.HandosBackend(predictor=RecordingPredictor(), fetcher=backend.ImageFetcher(ls_url=url, api_key=GOOD_KEY))
    server = backend.make_server(be, "127.0.0.1", 0, basic_auth=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    me = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, body = call(me, "/predict", {"tasks": [{"id": 1, "data": {"image": "/api/projects"}}]})
        assert status == 422 and "/data/upload/" in body["error"] and "/data/local-files/?d=" in body["error"]
        assert len(body["error"].splitlines()) == 1 and GOOD_KEY not in json.dumps(body)
        status, body = call(me, "/predict", {"tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=../../etc/passwd"}}]})
        assert status == 422 and "'..'" in body["error"] and "key" not in body["error"].lower()
        assert seen == []
        status, body = call(me, "/predict", {"tasks": [{"id": 1, "data": {"image": "/data/upload/1/x.png"}}]})
        assert status == 200 and seen == [("/data/upload/1/x.png", f"Token {GOOD_KEY}")]
    finally:
        server.shutdown()
        server.server_close()


def test_basic_auth_when_the_env_vars_are_set(monkeypatch, tmp_path):
    monkeypatch.setenv("BASIC_AUTH_USER", "ls")
    monkeypatch.setenv("BASIC_AUTH_PASS", "s3cret:with colon")
    be = backend.HandosBackend(predictor=RecordingPredictor())
    server = backend.make_server(be, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    good, body = ("ls", "s3cret:with colon"), {"tasks": []}
    try:
        assert call(url, "/health")[0] == 200  # Label Studio's connection check stays open
        for creds in (None, ("ls", "wrong"), ("LS", "s3cret:with colon"), ("ls", "s3cret:with colo"), ("", "")):
            for path, payload in (("/predict", body), ("/setup", {}), ("/", None), ("/metrics", None), ("/webhook", {})):
                headers: dict = {}
                status, answer = call(url, path, payload, auth=creds, headers_out=headers)
                assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), (path, creds)
                assert "s3cret" not in json.dumps(answer)
        assert call(url, "/predict", body, auth=good) == (200, {"results": []})
        assert call(url, "/setup", {}, auth=good) == (200, {"model_version": "stand-in-1"})
        assert call(url, "/", auth=good)[0] == 200
        req = urllib.request.Request(url + "/predict", data=b"{}", headers={"Authorization": "Basic !!notbase64"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
    finally:
        server.shutdown()
        server.server_close()


def test_basic_auth_is_off_when_unset_and_refuses_half_a_configuration(monkeypatch):
    monkeypatch.delenv("BASIC_AUTH_USER", raising=False)
    monkeypatch.delenv("BASIC_AUTH_PASS", raising=False)
    assert backend.basic_auth_from_env() is None
    server = backend.make_server(backend.HandosBackend(predictor=RecordingPredictor()), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert call(f"http://127.0.0.1:{server.server_address[1]}", "/predict", {"tasks": []}) == (200, {"results": []})
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.setenv("BASIC_AUTH_USER", "ls")
    with pytest.raises(InputError, match="both BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        backend.basic_auth_from_env()
    assert backend.basic_auth_ok("Basic " + base64.b64encode(b"u:p").decode(), ("u", "p"))
    assert not backend.basic_auth_ok("Bearer x", ("u", "p")) and not backend.basic_auth_ok(None, ("u", "p"))


# ---- the smart tool: a drawn box comes back as a full hand ---------------------------------------------------


def smart_body(task: dict, x: float, y: float, w: float, h: float, size: tuple[int, int]) -> dict:
    """A /predict body as Label Studio sends it for interactive pre-annotation: the drawn rectangle (percent of
    original_width/height) in params.context.result."""
    drawn = {"id": "Ab3xYz", "from_name": "hand", "to_name": "image", "type": "rectanglelabels", "origin": "manual",
             "original_width": size[0], "original_height": size[1], "image_rotation": 0,
             "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["right hand"]}}
    return {"tasks": [task], "label_config": convert.label_config(), "project": "1.1700000000",
            "params": {"login": None, "password": None, "context": {"result": [drawn]}}}


class BoxPredictor(RecordingPredictor):
    """Also takes box prompts: one hand per box (placed inside it), and remembers them."""

    def __init__(self) -> None:
        super().__init__()
        self.boxes: list = []

    def record(self, image, camera=None, file=None, include_vertices=False, boxes=None) -> dict:
        self.boxes.append(boxes)
        rec = super().record(image, camera, file, include_vertices)
        if boxes is not None:
            rec["hands"] = [dict(rec["hands"][0], id=i, bbox_xyxy=list(b)) for i, b in enumerate(boxes)]
        return rec


def check_smart_result(result: list[dict]) -> dict:
    """One hand: 21 (or fewer, inside the image) keypoints tied to one box by parentID, written before it."""
    boxes = [r for r in result if r["type"] == "rectanglelabels"]
    assert len(boxes) == 1
    box = boxes[0]
    kps = [r for r in result if r["type"] == "keypointlabels"]
    assert kps and all(k["parentID"] == box["id"] for k in kps)
    assert max(result.index(k) for k in kps) < result.index(box)  # keypoints before their box
    assert len({r["id"] for r in kps} | {box["id"]}) == len(kps) + 1
    assert not any(r["id"].startswith("h0") for r in result)  # never clashes with a full prediction's h0...
    return box


def test_smart_tool_box_gives_exactly_that_hand(tmp_path):
    rgb = (np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)
    pred = BoxPredictor()
    be = backend.HandosBackend(predictor=pred)
    uri = "data:image/png;base64," + base64.b64encode(push.encode_png(rgb)).decode()
    task = {"id": 5, "data": {"image": uri}}
    status, body = be.predict(smart_body(task, 25.0, 50.0, 50.0, 25.0, (64, 48)))
    assert status == 200 and len(body["results"]) == 1
    np.testing.assert_allclose(pred.boxes[-1], [[16, 24, 48, 36]])  # percent of 64x48 -> px
    box = check_smart_result(body["results"][0]["result"])
    assert box["id"] == "Ab3xYzh"
    # Label Studio's drawn size differs from the fetched image's: scaled to the image
    be.predict(smart_body(task, 25.0, 50.0, 50.0, 25.0, (128, 96)))
    np.testing.assert_allclose(pred.boxes[-1], [[16, 24, 48, 36]])
    # without context (or an empty one): the full prediction, as before
    status, body = be.predict({"tasks": [task], "params": {"context": {"result": []}}})
    assert status == 200 and pred.boxes[-1] is None
    assert body["results"][0]["result"] == convert.record_to_result(RecordingPredictor().record(rgb))
    # a context without a rectangle: one clear error
    bad = smart_body(task, 1, 1, 1, 1, (64, 48))
    bad["params"]["context"]["result"][0]["type"] = "keypointlabels"
    status, body = be.predict(bad)
    assert status == 422 and "no rectangle" in body["error"]


def test_smart_tool_with_the_real_model(model, realdata):
    """A box drawn around a ge2019 hand: 21 keypoints, a tightened box and handedness, within the image."""
    ann = json.loads((realdata / "ge2019_realworld" / "derived_annotations.json").read_text())
    im = ann["images"][3]
    raw = (realdata / "ge2019_realworld" / im["file"]).read_bytes()
    W, H = im["width"], im["height"]
    j = np.asarray(im["hands"][0]["joints_2d"], dtype=np.float64)
    lo, hi = j.min(0) - 10, j.max(0) + 10  # a loosely drawn box
    be = backend.HandosBackend(predictor=model)
    task = {"id": 9, "data": {"image": "data:image/jpeg;base64," + base64.b64encode(raw).decode()}}
    status, body = be.predict(smart_body(task, lo[0] / W * 100, lo[1] / H * 100, (hi - lo)[0] / W * 100,
                                         (hi - lo)[1] / H * 100, (W, H)))
    assert status == 200
    result = body["results"][0]["result"]
    box = check_smart_result(result)
    kps = {r["value"]["keypointlabels"][0]: r["value"] for r in result if r["type"] == "keypointlabels"}
    assert len(kps) == 21
    from handos.io.schema import JOINT_NAMES

    pts = np.array([[kps[n]["x"] * W / 100, kps[n]["y"] * H / 100] for n in JOINT_NAMES])
    assert np.linalg.norm(pts - j, axis=1).mean() < 0.1 * (j.max(0) - j.min(0)).max()
    v = box["value"]
    assert v["rectanglelabels"][0] in ("right hand", "left hand")
    span = pts.max(0) - pts.min(0)  # the box is the keypoints' own (10 % margin per edge), not the drawn one
    assert v["width"] * W / 100 == pytest.approx(1.2 * span[0], abs=1.0)
    assert v["height"] * H / 100 == pytest.approx(1.2 * span[1], abs=1.0)
