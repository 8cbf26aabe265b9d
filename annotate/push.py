"""Push handos predictions into Label Studio as pre-annotations: idempotent, batched, resumable.

Each task carries `data.handos_key`, the content hash of its image. Before importing, the project's
existing keys are read back, so a re-run adds nothing twice and a run cut off half way simply
continues. Images are uploaded to Label Studio, or referenced through its local-files storage when
they sit on the server's machine (`local_files_root` = the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT).
"""
from __future__ import annotations

import contextlib
import io
import json
import mimetypes
import os
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annotate import convert
from handos.errors import InputError, RemoteError

DEFAULT_TIMEOUT_S = 60.0


@dataclass
class PushResult:
    """What a push did: the project, the task id of every input (in input order), links to the tasks."""

    project_id: int
    task_ids: list[int]
    url_of_tasks: list[str]
    created: int = 0  # tasks imported by this call
    skipped: int = 0  # inputs whose task was already in the project
    project_url: str = ""


@dataclass
class PushItem:
    """One image to push: its record, where its pixels are, and its stable key."""

    record: dict[str, Any]
    image: str | Path | bytes | np.ndarray  # a local path, encoded bytes, or an (H, W, 3) RGB array
    key: str = ""
    name: str = ""  # file name for the upload

    def __post_init__(self) -> None:
        if not self.key:
            self.key = convert.image_key(self.image if isinstance(self.image, np.ndarray) else read_bytes(self.image))
        if not self.name:
            base = Path(str(self.image)).name if isinstance(self.image, (str, Path)) else "image.png"
            self.name = base or "image.png"


def read_bytes(image: str | Path | bytes) -> bytes:
    """The bytes of an image given as a path or bytes (InputError when the file cannot be read)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    try:
        return Path(image).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read image {image}: {err.strerror or err}") from None


def encode_png(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) or (H, W) uint8 array -> PNG bytes."""
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise InputError(f"image arrays must be uint8 (H, W[, 3]); got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# connection and errors


def _short(text: Any, n: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 3] + "..."


@contextlib.contextmanager
def remote_errors(ls_url: str, doing: str) -> Iterator[None]:
    """Turn connection and HTTP failures from the SDK/httpx into one-line RemoteErrors (never with the key)."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as err:
        code = err.status_code
        if code in (401, 403):
            raise RemoteError(f"Label Studio at {ls_url} refused the API key while {doing} (HTTP {code}); "
                              "set LABEL_STUDIO_API_KEY to the token under Account & Settings") from None
        if code == 404:
            raise RemoteError(f"Label Studio at {ls_url}: not found while {doing} (HTTP 404); check --ls-url and --project") from None
        raise RemoteError(f"Label Studio at {ls_url} answered HTTP {code} while {doing}: {_short(err.body)}") from None
    except httpx.HTTPStatusError as err:
        code = err.response.status_code
        if code in (401, 403):
            raise RemoteError(f"Label Studio at {ls_url} refused the API key while {doing} (HTTP {code}); "
                              "set LABEL_STUDIO_API_KEY to the token under Account & Settings") from None
        raise RemoteError(f"Label Studio at {ls_url} answered HTTP {code} while {doing}: {_short(err.response.text)}") from None
    except (httpx.TransportError, OSError) as err:
        raise RemoteError(f"cannot reach Label Studio at {ls_url} while {doing} ({type(err).__name__}); "
                          "is the server running and --ls-url right? Re-run to continue: nothing pushed is lost") from None
    except json.JSONDecodeError:
        raise RemoteError(f"{ls_url} did not answer like Label Studio while {doing}; check --ls-url") from None


def normalize_url(ls_url: str) -> str:
    """'localhost:8080/' -> 'http://localhost:8080' (InputError for a URL that is not http(s))."""
    url = (ls_url or "").strip().rstrip("/")
    if not url:
        raise InputError("no Label Studio URL: pass --ls-url http://HOST:PORT (or set LABEL_STUDIO_URL)")
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--ls-url must be an http(s) URL like http://localhost:8080, got {ls_url!r}")
    return url


def connect(ls_url: str, api_key: str | None, timeout: float = DEFAULT_TIMEOUT_S):
    """A checked Label Studio client: the server answers and accepts the key (RemoteError otherwise)."""
    from label_studio_sdk import LabelStudio

    url = normalize_url(ls_url)
    if not api_key:
        raise InputError("no Label Studio API key: set LABEL_STUDIO_API_KEY (Account & Settings -> Access Token)")
    try:
        client = LabelStudio(base_url=url, api_key=api_key, timeout=timeout)
    except Exception as err:  # the SDK validates JWT keys up front (e.g. an expired personal access token)
        raise RemoteError(f"the Label Studio API key was rejected before connecting ({type(err).__name__}); "
                          "set LABEL_STUDIO_API_KEY to a current token") from None
    with remote_errors(url, "checking the API key"):
        client.users.whoami(request_options={"max_retries": 0})
    client.handos_url = url  # type: ignore[attr-defined]
    return client


def _url(client) -> str:
    return getattr(client, "handos_url", None) or client._client_wrapper.get_base_url()


def _http(client, method: str, path: str, **kwargs) -> Any:
    """A raw request with the client's auth headers (for endpoints the SDK does not cover); JSON back."""
    import httpx

    headers = dict(client._client_wrapper.get_headers())
    headers.pop("Content-Type", None)
    r = httpx.request(method, _url(client) + path, headers=headers, timeout=client._client_wrapper.get_timeout(), **kwargs)
    r.raise_for_status()
    return r.json() if r.content else None


def _raw_get(client, path: str) -> bytes:
    """GET a server path (e.g. a task's /data/upload/... image) with the client's auth; the bytes back."""
    import httpx

    headers = {"Authorization": client._client_wrapper.get_headers()["Authorization"]}
    url = path if path.startswith(("http://", "https://")) else _url(client) + path
    with remote_errors(_url(client), "downloading a file"):
        r = httpx.get(url, headers=headers, timeout=client._client_wrapper.get_timeout())
        r.raise_for_status()
        return r.content


# ---------------------------------------------------------------------------------------------
# project, existing tasks, images


def find_or_create_project(client, project: str | int, create: bool = True) -> int:
    """The id of the project named (or numbered) `project`; created with the hands config when absent and allowed."""
    url = _url(client)
    with remote_errors(url, "looking up the project"):
        if isinstance(project, int) or (isinstance(project, str) and project.isdigit()):
            p = client.projects.get(id=int(project))
            check_project_config(p.label_config or "", p.title or str(project))
            return int(p.id)
        title = str(project).strip()
        if len(title) < 3:
            raise InputError(f"project name {title!r} is too short: Label Studio needs 3 or more characters")
        found = [p for p in client.projects.list(title=title, page_size=100) if (p.title or "") == title]
        if found:
            p = min(found, key=lambda p: p.id)
            check_project_config(p.label_config or "", title)
            return int(p.id)
        if not create:
            raise InputError(f"no project named {title!r} at {url}; pass --create to make it")
        p = client.projects.create(title=title, label_config=convert.label_config(),
                                   description="Hands pre-labelled by handos: correct boxes, handedness and the 21 joints.")
        return int(p.id)


def check_project_config(config: str, title: str) -> None:
    """InputError unless the project's labeling config has the hands tags this package writes."""
    needed = (f'name="{convert.BOX_TAG}"', f'name="{convert.JOINT_TAG}"', 'name="image"')
    if not all(n in config for n in needed):
        raise InputError(f"project {title!r} has another labeling config (needs RectangleLabels 'hand', "
                         "KeyPointLabels 'joints', Image 'image'); use a new project name with --create")


def existing_keys(client, project_id: int, keys: Sequence[str] | None = None, chunk: int = 50) -> dict[str, int]:
    """handos_key -> task id for the tasks already in the project: all of them, or only those among `keys`.

    With `keys`, the server filters (Data Manager filter on data.handos_key), so the check costs the
    same in a project of ten tasks or a million.
    """
    found: dict[str, int] = {}

    def add(rows: Iterable[Any]) -> None:
        for t in rows:
            d = t.get("data") if isinstance(t, dict) else t.data
            tid = t.get("id") if isinstance(t, dict) else t.id
            k = (d or {}).get(convert.KEY_FIELD)
            if k and (k not in found or int(tid) < found[k]):
                found[k] = int(tid)

    with remote_errors(_url(client), "reading the project's tasks"):
        if keys is None:
            add(client.tasks.list(project=project_id, fields="task_only", page_size=500))
            return found
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), chunk):
            part = keys[start:start + chunk]
            query = {"filters": {"conjunction": "or", "items": [
                {"filter": f"filter:tasks:data.{convert.KEY_FIELD}", "operator": "equal", "type": "String", "value": k}
                for k in part]}}
            page = 1
            while True:
                resp = _http(client, "GET", "/api/tasks", params={
                    "project": project_id, "fields": "task_only", "include": "id,data", "query": json.dumps(query),
                    "page": page, "page_size": 100})
                rows = resp.get("tasks", []) if isinstance(resp, dict) else resp
                add(rows)
                if len(rows) < 100:
                    break
                page += 1
    return {k: v for k, v in found.items() if k in set(keys)}


def upload_images(client, project_id: int, items: Sequence[PushItem]) -> dict[str, str]:
    """Upload the items' images to the project's media (no tasks made); key -> URL Label Studio serves."""
    files = []
    for i, it in enumerate(items):
        data = encode_png(it.image) if isinstance(it.image, np.ndarray) else read_bytes(it.image)
        ext = ".png" if isinstance(it.image, np.ndarray) else (Path(it.name).suffix.lower() or ".jpg")
        fname = f"{it.key}{ext}"
        files.append((f"file{i}", (fname, data, mimetypes.guess_type(fname)[0] or "application/octet-stream")))  # one file per form field: Label Studio keeps the last file of a repeated field
    with remote_errors(_url(client), "uploading images"):
        resp = _http(client, "POST", f"/api/projects/{project_id}/import", params={"commit_to_project": "false"}, files=files)
        ids = resp.get("file_upload_ids") or []
        uploads = client.files.list(id=project_id, ids=json.dumps(ids)) if ids else []
    by_key: dict[str, str] = {}
    for up in uploads:
        stored = str(up.file)  # "upload/<project>/<uuid8>-<key>.<ext>"
        key = Path(stored).stem.split("-", 1)[-1]
        by_key[key] = "/data/" + stored.lstrip("/")
    missing = [it.key for it in items if it.key not in by_key]
    if missing:
        raise RemoteError(f"Label Studio at {_url(client)} did not store {len(missing)} uploaded image(s); re-run to retry")
    return by_key


def local_file_url(path: str | Path, root: str | Path) -> str:
    """The local-files URL of an image under the server's document root (InputError if outside it)."""
    p, r = Path(path).resolve(), Path(root).resolve()
    try:
        rel = p.relative_to(r)
    except ValueError:
        raise InputError(f"{path} is not under the local-files root {root}; move it there or drop --local-files") from None
    return "/data/local-files/?d=" + urllib.parse.quote(rel.as_posix())


def ensure_local_storage(client, project_id: int, folders: Iterable[str | Path]) -> None:
    """Make sure a local-files storage of the project covers each folder (Label Studio checks this on serving)."""
    with remote_errors(_url(client), "setting up local-files storage"):
        have = [str(s.path) for s in client.import_storage.local.list(project=project_id)]
        for folder in sorted({str(Path(f).resolve()) for f in folders}):
            if any(folder == h.rstrip(os.sep) or folder.startswith(h.rstrip(os.sep) + os.sep) for h in have):
                continue
            client.import_storage.local.create(project=project_id, path=folder, title="handos local files"[:50],
                                               use_blob_urls=True, recursive_scan=False)
            have.append(folder)


def task_links(ls_url: str, project_id: int, task_ids: Sequence[int]) -> list[str]:
    """Browser links that open each task in the labeling view."""
    return [f"{ls_url}/projects/{project_id}/data?tab=0&task={t}" for t in task_ids]


# ---------------------------------------------------------------------------------------------
# the push


@dataclass
class UploadCache:
    """key -> uploaded URL, appended to a JSONL file as uploads finish, so a resumed run re-uploads nothing."""

    path: Path | None = None
    urls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.urls[row["key"]] = row["url"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def add(self, urls: dict[str, str]) -> None:
        """Remember new uploads (flushed at once)."""
        self.urls.update(urls)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps({"key": k, "url": u}) + "\n" for k, u in urls.items())


def task_file(item: PushItem) -> dict[str, str] | None:
    """data.file for an image given as a path: its absolute path, so an export finds it from any folder."""
    if isinstance(item.image, (str, Path)):
        return {convert.FILE_FIELD: os.path.abspath(item.image)}
    return None


def push_items(
    client,
    project_id: int,
    items: Sequence[PushItem],
    batch_size: int = 50,
    local_files_root: str | Path | None = None,
    uploads: UploadCache | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> PushResult:
    """Import every item not yet in the project (key check), in batches; returns ids in input order."""
    if batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    url = _url(client)
    uploads = uploads or UploadCache()
    unique, seen = [], set()
    for it in items:  # one task per image content, whatever the input repeats
        if it.key not in seen:
            seen.add(it.key)
            unique.append(it)
    if local_files_root is not None and unique:
        if any(not isinstance(it.image, (str, Path)) for it in unique):
            raise InputError("--local-files needs images given as files on disk")
        ensure_local_storage(client, project_id, {Path(it.image).resolve().parent for it in unique})
    have: dict[str, int] = {}
    created = 0
    for start in range(0, len(unique), batch_size):
        chunk = unique[start:start + batch_size]
        have.update(existing_keys(client, project_id, [it.key for it in chunk]))  # asked per batch: resumable
        batch = [it for it in chunk if it.key not in have]
        if batch:
            if local_files_root is not None:
                urls = {it.key: local_file_url(it.image, local_files_root) for it in batch}
            else:
                need = [it for it in batch if it.key not in uploads.urls]
                if need:
                    uploads.add(upload_images(client, project_id, need))
                urls = {it.key: uploads.urls[it.key] for it in batch}
            tasks = [convert.record_to_task(it.record, urls[it.key], it.key, extra_data=task_file(it)) for it in batch]
            with remote_errors(url, "importing tasks"):
                resp = client.projects.import_tasks(id=project_id, request=tasks, return_task_ids=True)
            ids = list(getattr(resp, "task_ids", None) or [])
            if len(ids) != len(batch):  # should not happen; read the keys back rather than guess
                fresh = existing_keys(client, project_id, [it.key for it in batch])
                ids = [fresh[it.key] for it in batch if it.key in fresh]
                if len(ids) != len(batch):
                    raise RemoteError(f"Label Studio at {url} imported {len(ids)} of {len(batch)} tasks; re-run to continue")
            have.update({it.key: int(t) for it, t in zip(batch, ids)})
            created += len(batch)
        if on_batch is not None:
            on_batch(len(chunk))
    task_ids = [have[it.key] for it in items]
    return PushResult(project_id=project_id, task_ids=task_ids, url_of_tasks=task_links(url, project_id, task_ids),
                      created=created, skipped=len(items) - created, project_url=f"{url}/projects/{project_id}")


def push_records(
    records: list[dict],
    images: list[str | Path | np.ndarray],
    ls_url: str,
    api_key: str,
    project: str | int,
    create: bool = True,
    batch_size: int = 50,
    local_files_root: str | Path | None = None,
) -> PushResult:
    """Push records (handos.prediction/1) with their images (paths or RGB arrays) as pre-annotated tasks."""
    if len(records) != len(images):
        raise InputError(f"push_records needs one image per record ({len(records)} records, {len(images)} images)")
    from handos.io.schema import validate_record

    for r in records:
        validate_record(r)
    client = connect(ls_url, api_key)
    project_id = find_or_create_project(client, project, create=create)
    items = [PushItem(record=r, image=im) for r, im in zip(records, images)]
    return push_items(client, project_id, items, batch_size=batch_size, local_files_root=local_files_root)


def export_tasks(client, project_id: int) -> list[dict[str, Any]]:
    """The project's tasks in Label Studio's JSON export format (all tasks, annotations and predictions)."""
    with remote_errors(_url(client), "exporting the project"):
        raw = b"".join(client.projects.exports.download_sync(id=project_id, export_type="JSON", download_all_tasks=True))
    try:
        tasks = json.loads(raw)
    except json.JSONDecodeError:
        raise RemoteError(f"Label Studio at {_url(client)} sent an export that is not JSON") from None
    if not isinstance(tasks, list):
        raise RemoteError(f"Label Studio at {_url(client)} sent an export that is not a task list")
    if any(isinstance(p, int) for t in tasks for p in t.get("predictions") or []):
        # the JSON export names predictions by id only: fetch them so the export is complete
        with remote_errors(_url(client), "reading the project's predictions"):
            preds = client.predictions.list(project=project_id)
        by_task: dict[int, list[dict]] = {}
        for p in preds:
            d = p.model_dump(mode="json") if hasattr(p, "model_dump") else dict(p)
            by_task.setdefault(int(d["task"]), []).append(
                {k: d.get(k) for k in ("id", "model_version", "score", "result", "created_at")})
        for t in tasks:
            if any(isinstance(p, int) for p in t.get("predictions") or []):
                t["predictions"] = by_task.get(int(t["id"]), [])
    return tasks
