"""A Label Studio ML backend serving handos predictions: `python -m annotate.backend --port 9090`.

It speaks Label Studio's ML backend HTTP API: GET /health (and /), POST /setup, POST /predict,
POST /webhook, POST /train, GET /versions, GET /metrics; with --versions-dir it fine-tunes from the
annotators' work and switches versions only when validation says no worse (annotate.training).
Connect it in a project under Settings -> Model. It fetches task images
only from the Label Studio it is configured for (`--ls-url` or LABEL_STUDIO_URL, key from
LABEL_STUDIO_API_KEY) or from files under `--local-root`, never from other hosts, and never more
than `--max-image-mb`. The key is sent only with requests for Label Studio's media paths (MEDIA_PATHS),
never logged and never sent anywhere else. With BASIC_AUTH_USER and BASIC_AUTH_PASS set (Label Studio's
ML backend convention), every route except GET /health asks for HTTP Basic auth with those credentials.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import logging
import os
import re
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from annotate import convert
from handos.errors import HandosError, InputError, RemoteError
from handos.foundation import RUNTIME_HELP, RUNTIMES

log = logging.getLogger("annotate.backend")
MAX_BODY_BYTES = 64 * 1024 * 1024  # a /predict request body (tasks JSON) larger than this is refused
# Label Studio 1.23's media paths, the only ones the key is sent to (after the server's own path prefix):
# uploads, local-files storage, the cloud-storage proxy (resolve, and presign kept for old tasks) and
# uploads kept in cloud file storage.
MEDIA_PATHS = ("/data/upload/<file>, /data/local-files/?d=<relative path>, /tasks/<id>/resolve/?fileuri=..., "
               "/projects/<id>/resolve/?fileuri=... (or .../presign/), /storage-data/uploaded/?filepath=upload/...")
_UPLOAD = re.compile(r"/data/upload/[^/].*")
_STORAGE_PROXY = re.compile(r"/(?:tasks|projects)/[0-9]+/(?:resolve|presign)/?")
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:")


def check_relative_path(rel: str, what: str) -> str:
    """`rel` if it is a relative path without '..' (a local-files `d`, a storage `filepath`), else InputError."""
    if not rel:
        raise InputError(f"refusing {what} with an empty path")
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(rel) or ".." in parts or "\x00" in rel:
        raise InputError(f"refusing {what}={rel[:80]!r}: the path must be relative to the storage root, without '..'")
    return rel


def check_media_path(path: str, query: str) -> None:
    """InputError unless `path` (below the Label Studio URL, percent-encoded) with `query` is a Label Studio media path."""
    decoded = urllib.parse.unquote(path)
    segments = decoded.split("/")
    if "." in segments or ".." in segments or "\\" in decoded or "\x00" in decoded:
        raise InputError(f"refusing the task image path {path[:80]!r}: it has '.' or '..' segments")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    if _UPLOAD.fullmatch(decoded):
        return
    if decoded in ("/data/local-files", "/data/local-files/"):
        d = params.get("d") or [""]
        if len(d) != 1:
            raise InputError("refusing a /data/local-files/ URL with several d= paths")
        check_relative_path(d[0], "/data/local-files/?d")
        return
    if _STORAGE_PROXY.fullmatch(decoded) and params.get("fileuri"):
        return
    if decoded == "/storage-data/uploaded/":
        fp = params.get("filepath") or [""]
        if len(fp) == 1 and check_relative_path(fp[0], "/storage-data/uploaded/?filepath").startswith("upload/"):
            return
    raise InputError(f"refusing to fetch {path[:80]!r} from Label Studio: task images must be on one of its media "
                     f"paths ({MEDIA_PATHS})")


class Predictor(Protocol):
    """What the backend needs from a model: handos.load() satisfies it."""

    version: str

    def record(self, image: Any, camera: Any = None, file: str | None = None, include_vertices: bool = False) -> dict:
        """One image -> a handos.prediction/1 record."""


@dataclass
class ImageFetcher:
    """Reads task images from the configured Label Studio host or a local root only, with a size limit."""

    ls_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    local_root: Path | None = None
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 30.0
    _headers: dict[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.ls_url:
            from annotate.push import normalize_url

            self.ls_url = normalize_url(self.ls_url)
        if self.local_root is not None:
            self.local_root = Path(self.local_root).resolve()

    def origin(self) -> tuple[str, str, int] | None:
        """(scheme, host, port) of the Label Studio this backend may fetch from."""
        if not self.ls_url:
            return None
        p = urllib.parse.urlsplit(self.ls_url)
        return p.scheme, host_id(p.hostname), p.port or (443 if p.scheme == "https" else 80)

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header for the configured key (legacy token or personal access token)."""
        if not self.api_key:
            return {}
        if self._headers is None:
            from label_studio_sdk import LabelStudio

            try:
                headers = LabelStudio(base_url=self.ls_url, api_key=self.api_key)._client_wrapper.get_headers()
            except Exception:
                raise RemoteError("the configured LABEL_STUDIO_API_KEY was rejected; set a current token") from None
            self._headers = {"Authorization": headers["Authorization"]}
        return self._headers

    def fetch(self, url: str) -> bytes:
        """The bytes of a task's image URL (InputError for URLs outside the allowed places or too large)."""
        if not isinstance(url, str) or not url:
            raise InputError("the task has no image URL")
        if url.startswith("data:"):
            return self._data_uri(url)
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port if parts.netloc else None
        except ValueError:
            raise InputError(f"the task image URL {url[:80]!r} is not a valid URL") from None
        prefix = urllib.parse.urlsplit(self.ls_url).path.rstrip("/") if self.ls_url else ""
        if not parts.scheme and not parts.netloc:  # "/data/upload/..." or "/data/local-files/?d=..."
            path = parts.path if parts.path.startswith("/") else "/" + parts.path
            if prefix and (path + "/").startswith(prefix + "/"):  # a server under a path prefix names it itself
                path = path[len(prefix):]
        else:
            if parts.scheme not in ("http", "https"):
                raise InputError(f"refusing to fetch a {parts.scheme!r} URL; only the configured Label Studio is read")
            port = port or (443 if parts.scheme == "https" else 80)
            if self.origin() != (parts.scheme, host_id(parts.hostname), port) or parts.username or parts.password:
                raise InputError(f"refusing to fetch images from {parts.hostname}:{port}; this backend only reads "
                                 f"from {self.ls_url or 'no Label Studio (none configured)'}")
            if prefix and not (parts.path + "/").startswith(prefix + "/"):
                raise InputError(f"refusing to fetch {parts.path[:80]!r}: it is outside {self.ls_url}")
            path = parts.path[len(prefix):]
        check_media_path(path, parts.query)  # before any request: the key goes to media paths only
        if path.rstrip("/") == "/data/local-files" and self.local_root is not None:
            return self._local(parts)
        if not self.ls_url:
            raise InputError(f"the task image {url[:80]!r} is on Label Studio but no --ls-url is configured")
        query = f"?{parts.query}" if parts.query else ""
        return self._http(self.ls_url + path + query)

    def _data_uri(self, url: str) -> bytes:
        head, _, payload = url.partition(",")
        if len(payload) > self.max_bytes * 4 // 3 + 4:
            raise InputError(f"the task image is larger than {self.max_bytes // (1 << 20)} MB")
        try:
            return base64.b64decode(payload, validate=False) if ";base64" in head else urllib.parse.unquote_to_bytes(payload)
        except (binascii.Error, ValueError):
            raise InputError("the task image data URI is not valid base64") from None

    def _local(self, parts: urllib.parse.SplitResult) -> bytes:
        rel = check_relative_path(urllib.parse.parse_qs(parts.query).get("d", [""])[0], "/data/local-files/?d")
        path = (self.local_root / rel.lstrip("/")).resolve()
        if path != self.local_root and self.local_root not in path.parents:
            raise InputError("refusing to read a local file outside --local-root")
        try:
            size = path.stat().st_size
        except OSError:
            raise InputError(f"local file {rel!r} not found under --local-root") from None
        if size > self.max_bytes:
            raise InputError(f"the task image is {size / (1 << 20):.1f} MB, over the {self.max_bytes / (1 << 20):.0f} MB limit")
        return path.read_bytes()

    def key_rejected(self) -> bool:
        """True when Label Studio rejects the configured key (asked at its current-user endpoint; no key: True)."""
        import httpx

        if not self.api_key:
            return True
        try:
            r = httpx.get(self.ls_url + "/api/current-user/whoami", headers=self.auth_headers(), timeout=self.timeout_s,
                          follow_redirects=False)
        except httpx.TransportError:
            return False
        return r.status_code in (401, 403)

    def _refused(self, status: int, url: str) -> RemoteError:
        """The error for a 401/403 on a media path: a key problem only when the key itself is rejected."""
        if not self.api_key:
            return RemoteError(f"Label Studio refused a task image (HTTP {status}): no LABEL_STUDIO_API_KEY is set for the backend")
        if self.key_rejected():
            return RemoteError(f"Label Studio rejected the configured LABEL_STUDIO_API_KEY (HTTP {status}); set a current token")
        path = urllib.parse.urlsplit(url).path
        return RemoteError(f"Label Studio refused the task image {path[:80]!r} (HTTP {status}) though the key is valid: "
                           "check that the image's storage (or LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED) serves it to this user")

    def _http(self, url: str) -> bytes:
        import httpx

        try:
            with httpx.stream("GET", url, headers=self.auth_headers(), timeout=self.timeout_s, follow_redirects=False) as r:
                if r.status_code in (401, 403):
                    raise self._refused(r.status_code, url)
                if r.status_code != 200:
                    raise RemoteError(f"Label Studio answered HTTP {r.status_code} for a task image")
                declared = int(r.headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    raise InputError(f"the task image is {declared / (1 << 20):.1f} MB, over the {self.max_bytes / (1 << 20):.0f} MB limit")
                chunks, total = [], 0
                for chunk in r.iter_bytes():
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise InputError(f"the task image is over the {self.max_bytes / (1 << 20):.0f} MB limit")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TransportError as err:
            raise RemoteError(f"cannot reach Label Studio at {self.ls_url} to fetch a task image ({type(err).__name__})") from None


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def host_id(hostname: str | None) -> str:
    """A host name for comparison: lower case, with the loopback names of this machine taken as one."""
    h = (hostname or "").lower().strip("[]")
    return "loopback" if h in LOOPBACK_NAMES else h


IMAGE_VAR = re.compile(r"<Image\b[^>]*?\bvalue=\"\$([A-Za-z0-9_]+)\"", re.S)


def image_field(label_config: str | None) -> str:
    """The task data field the config's <Image value="$..."> reads (default 'image')."""
    m = IMAGE_VAR.search(label_config or "")
    return m.group(1) if m else convert.IMAGE_KEY


class HandosBackend:
    """The ML backend's logic, free of HTTP: setup, predict (one Label Studio prediction per task)."""

    def __init__(self, predictor: Predictor | None = None, fetcher: ImageFetcher | None = None,
                 device: str = "auto", weights: str | None = None, runtime: str | None = None) -> None:
        """`predictor` defaults to handos.load(weights, device, runtime=runtime), loaded on first use."""
        self._predictor = predictor
        self._device, self._weights, self._runtime = device, weights, runtime
        self.fetcher = fetcher or ImageFetcher()
        self.lock = threading.Lock()  # one inference at a time: the model is not shared across threads
        self.trainer: Any = None  # annotate.training.Trainer when the backend trains from webhooks

    @property
    def predictor(self) -> Predictor:
        """The model (loaded lazily)."""
        if self._predictor is None:
            import handos

            self._predictor = handos.load(weights=self._weights, device=self._device, runtime=self._runtime)
        return self._predictor

    @property
    def version(self) -> str:
        """The model version Label Studio records with each prediction."""
        return str(self.predictor.version)

    def setup(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /setup: Label Studio connects a project; we answer with our model version."""
        return {"model_version": self.version}

    def predict_task(self, task: dict[str, Any], field_name: str, context: Any = None) -> dict[str, Any]:
        """One task -> one Label Studio prediction {result, score, model_version}.

        With a smart-tool `context` (its `result` holding the rectangle(s) the annotator drew), the prediction
        holds exactly one hand per drawn rectangle (box prompts: no detection), with region ids of its own.
        """
        from handos.io.images import load_image

        data = task.get("data") or {}
        url = data.get(field_name)
        raw = self.fetcher.fetch(url)
        loaded = load_image(raw)
        known = data.get(convert.RECORD_FIELD) if isinstance(data.get(convert.RECORD_FIELD), dict) else {}
        drawn = context_boxes(context, loaded.width, loaded.height)
        prompt = {} if drawn is None else {"boxes": [box for box, _ in drawn]}
        with self.lock:
            record = self.predictor.record(loaded.rgb, camera=known.get("camera"),
                                           file=data.get(convert.FILE_FIELD) or str(url)[:200], **prompt)
        prediction = convert.record_to_prediction(record, model_version=self.version)
        if drawn is not None:
            prediction["result"] = smart_region_ids(prediction["result"], [rid for _, rid in drawn])
        return prediction

    def predict(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /predict: {tasks, label_config, ...} -> (HTTP status, {"results": [one per task]})."""
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            return 400, {"error": "the request has no 'tasks' list"}
        field_name = image_field(body.get("label_config"))
        context = smart_context(body)  # interactive pre-annotation: the region drawn on the first task
        results, errors = [], []
        for n, task in enumerate(tasks):
            try:
                results.append(self.predict_task(task if isinstance(task, dict) else {}, field_name,
                                                 context if n == 0 else None))
            except HandosError as err:
                msg = str(err).splitlines()[0]
                log.warning("task %s: %s", task.get("id") if isinstance(task, dict) else "?", msg)
                errors.append(msg)
                results.append({"result": [], "score": 0.0, "model_version": self.version})
        if tasks and len(errors) == len(tasks):
            return 422, {"error": errors[0], "results": []}
        return 200, {"results": results}


def smart_context(body: dict[str, Any]) -> dict[str, Any] | None:
    """The smart tool's context of a /predict body (`params.context`, as Label Studio sends it, or `context`),
    when its `result` holds a drawn region; else None (a plain pre-annotation request)."""
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    for ctx in (params.get("context"), body.get("context")):
        if isinstance(ctx, dict) and isinstance(ctx.get("result"), list) and ctx["result"]:
            return ctx
    return None


def context_boxes(context: dict[str, Any] | None, width: int, height: int) -> list[tuple[list[float], str]] | None:
    """The rectangles of a smart-tool context as ([x1, y1, x2, y2] px of the image, region id), or None without
    context; InputError when the context holds no usable rectangle."""
    if context is None:
        return None
    out = []
    for k, item in enumerate(context.get("result") or []):
        if not isinstance(item, dict) or item.get("type") not in ("rectanglelabels", "rectangle"):
            continue
        value = item.get("value") or {}
        try:
            W, H = float(item.get("original_width") or width), float(item.get("original_height") or height)
            box = convert._region_box_px({k2: float(value[k2]) for k2 in ("x", "y", "width", "height")}
                                         | {"rotation": float(value.get("rotation") or 0.0)}, W, H)
        except (KeyError, TypeError, ValueError):
            raise InputError("the drawn rectangle has no numeric x, y, width, height") from None
        box = box * [width / W, height / H, width / W, height / H]  # the size Label Studio saw -> the image's
        out.append(([float(v) for v in box], str(item.get("id") or f"r{k}")))
    if not out:
        raise InputError("the smart-tool request holds no rectangle; draw a box around the hand")
    return out


def smart_region_ids(result: list[dict[str, Any]], drawn_ids: list[str]) -> list[dict[str, Any]]:
    """Region ids of a box-prompted prediction renamed after the drawn regions (`h{i}` -> `{drawn id}h`, joints
    and flags with it), so they never collide with the ids of a full prediction already in the annotation."""
    names = {f"h{i}": f"{rid}h" for i, rid in enumerate(drawn_ids)}

    def rename(rid: Any) -> Any:
        if not isinstance(rid, str):
            return rid
        head, sep, tail = rid.partition("k")
        return names[head] + sep + tail if head in names else rid

    return [{**r, "id": rename(r.get("id")), **({"parentID": rename(r["parentID"])} if "parentID" in r else {})}
            for r in result]


def basic_auth_from_env(environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(user, password) from BASIC_AUTH_USER / BASIC_AUTH_PASS, None when neither is set (InputError for one alone)."""
    env = os.environ if environ is None else environ
    user, password = env.get("BASIC_AUTH_USER") or "", env.get("BASIC_AUTH_PASS") or ""
    if bool(user) != bool(password):
        raise InputError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS (or neither) to protect the backend")
    return (user, password) if user else None


def basic_auth_ok(header: str | None, credentials: tuple[str, str]) -> bool:
    """True when an Authorization header carries HTTP Basic `credentials` (compared in constant time)."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(user.encode(), credentials[0].encode())
    pass_ok = hmac.compare_digest(password.encode(), credentials[1].encode())
    return bool(sep) and user_ok and pass_ok


_FROM_ENV: Any = object()


def make_handler(backend: HandosBackend, basic_auth: tuple[str, str] | None = None) -> type[BaseHTTPRequestHandler]:
    """The HTTP request handler class bound to `backend` (HTTP Basic auth on all but GET /health when given)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "handos-ml-backend"
        protocol_version = "HTTP/1.1"

        def _authorized(self) -> bool:
            """True when no credentials are configured or the request carries them; else answers 401."""
            if basic_auth is None or basic_auth_ok(self.headers.get("Authorization"), basic_auth):
                return True
            body = json.dumps({"error": "authentication required (HTTP Basic: BASIC_AUTH_USER / BASIC_AUTH_PASS)"}).encode()
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="handos ML backend", charset="UTF-8"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True  # the request body (if any) is left unread
            return False

        def log_message(self, fmt: str, *args: Any) -> None:  # method, path and status only: no headers, no bodies
            log.info("%s %s", self.address_string(), fmt % args)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> dict[str, Any] | None:
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY_BYTES:
                self._send(413, {"error": f"request body over {MAX_BODY_BYTES >> 20} MB"})
                self.close_connection = True
                return None
            try:
                body = json.loads(self.rfile.read(n) or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError):
                self._send(400, {"error": "the request body is not JSON"})
                return None
            if not isinstance(body, dict):
                self._send(400, {"error": "the request body must be a JSON object"})
                return None
            return body

        def do_GET(self) -> None:  # noqa: N802
            path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
            if path != "/health" and not self._authorized():
                return
            if path in ("/", "/health"):
                self._send(200, {"status": "UP", "model_class": "handos", "model_version": backend.version})
            elif path == "/metrics":
                self._send(200, {})
            elif path == "/versions" and backend.trainer is not None:
                self._send(200, backend.trainer.versions())
            elif path == "/versions":
                self._send(200, {"versions": [backend.version]})
            else:
                self._send(404, {"error": f"no route {path}"})

        def do_POST(self) -> None:  # noqa: N802
            path = urllib.parse.urlsplit(self.path).path.rstrip("/")
            if not self._authorized():
                return
            body = self._body()
            if body is None:
                return
            try:
                if path == "/setup":
                    self._send(200, backend.setup(body))
                elif path == "/predict":
                    status, payload = backend.predict(body)
                    self._send(status, payload)
                elif path in ("/webhook", "/train") and backend.trainer is not None:  # annotate.training
                    self._send(*(backend.trainer.on_webhook(body) if path == "/webhook" else backend.trainer.start()))
                elif path == "/webhook":
                    self._send(200, {"status": "ok", "note": "training from webhooks is off: start with --versions-dir"})
                elif path == "/train":
                    self._send(200, {"status": "ok", "note": "training from webhooks is off: start with --versions-dir"})
                elif path == "/versions":
                    self._send(200, {"versions": [backend.version]})
                else:
                    self._send(404, {"error": f"no route {path}"})
            except HandosError as err:
                self._send(500, {"error": str(err).splitlines()[0]})
            except Exception as err:  # keep serving; one line in the log, no request data
                log.error("%s failed: %s", path, type(err).__name__)
                self._send(500, {"error": f"internal error ({type(err).__name__})"})

    return Handler


def make_server(backend: HandosBackend, host: str = "127.0.0.1", port: int = 9090,
                basic_auth: tuple[str, str] | None = _FROM_ENV) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for `backend`; call serve_forever() on it (e.g. in a thread).

    `basic_auth` defaults to BASIC_AUTH_USER / BASIC_AUTH_PASS from the environment; None turns it off.
    """
    if basic_auth is _FROM_ENV:
        basic_auth = basic_auth_from_env()
    server = ThreadingHTTPServer((host, port), make_handler(backend, basic_auth))
    server.daemon_threads = True
    return server


def build_parser() -> argparse.ArgumentParser:
    """The backend's options."""
    p = argparse.ArgumentParser(prog="python -m annotate.backend",
                                description="Label Studio ML backend serving handos hand predictions.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--ls-url", default=os.environ.get("LABEL_STUDIO_URL"),
                   help="the Label Studio to fetch task images from (default $LABEL_STUDIO_URL); key from $LABEL_STUDIO_API_KEY")
    p.add_argument("--local-root", default=os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"),
                   help="read /data/local-files/?d=... images from this folder (default $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
    p.add_argument("--max-image-mb", type=float, default=20.0, help="refuse task images larger than this")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--runtime", choices=RUNTIMES, default=None, help=RUNTIME_HELP)
    t = p.add_argument_group("training from annotations (see annotate.training)")
    t.add_argument("--versions-dir", default=None,
                   help="fine-tune from submitted annotations (Label Studio webhooks) into DIR/vNNN; off when unset")
    t.add_argument("--train-every", type=int, default=20, help="start a run after this many new annotations")
    t.add_argument("--train-command", default=None,
                   help="the fine-tuning command (default: python -m handos train); gets --finetune DATA --out DIR [--weights W]")
    t.add_argument("--train-args", default="", help="extra arguments for it, e.g. \"--steps 500 --foundation frozen\"")
    t.add_argument("--train-project", type=int, default=None, help="train only on this project id's annotations")
    return p


def main(argv: list[str] | None = None) -> int:
    """Load the model, then serve until interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        fetcher = ImageFetcher(ls_url=args.ls_url, api_key=os.environ.get("LABEL_STUDIO_API_KEY") or None,
                               local_root=Path(args.local_root) if args.local_root else None,
                               max_bytes=int(args.max_image_mb * (1 << 20)))
        if fetcher.ls_url and not fetcher.api_key:
            log.warning("LABEL_STUDIO_API_KEY is not set: images uploaded to Label Studio cannot be fetched")
        basic_auth = basic_auth_from_env()
        if args.runtime:  # also for the versions the trainer loads (handos.load reads it)
            os.environ["HANDOS_RUNTIME"] = args.runtime
        backend = HandosBackend(fetcher=fetcher, device=args.device, weights=args.weights, runtime=args.runtime)
        if args.versions_dir:
            from annotate import training

            backend.trainer = training.trainer_from_args(args)
            backend.trainer.attach(backend)
        log.info("loading the handos model ...")
        version = backend.version
        server = make_server(backend, args.host, args.port, basic_auth=basic_auth)
    except HandosError as err:
        print(f"annotate.backend: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"annotate.backend: error: cannot listen on {args.host}:{args.port} ({err.strerror}); choose another --port",
              file=sys.stderr)
        return 2
    log.info("handos ML backend %s on http://%s:%d (images from %s%s; %s)", version, args.host, args.port,
             fetcher.ls_url or "no Label Studio", f" and {fetcher.local_root}" if fetcher.local_root else "",
             "HTTP Basic auth on" if basic_auth else "no HTTP Basic auth: BASIC_AUTH_USER/BASIC_AUTH_PASS unset")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if backend.trainer is not None:
            backend.trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
