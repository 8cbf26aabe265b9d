"""The ML backend trains from the annotators' work: webhooks -> export -> fine-tune -> validated switch.

Label Studio posts ANNOTATION_CREATED / ANNOTATION_UPDATED (and START_TRAINING, from *Start Training*)
to the backend's /webhook. Each distinct submitted annotation counts once; after `train_every` of
them the trainer exports the project's submitted annotations through the Label Studio API (the same
export and conversion as `handos label --export`; images that live only on Label Studio are fetched
once into VERSIONS/images/), then runs the fine-tuning command in a child process:

    python -m handos train --finetune VERSIONS/vNNN/data/train.json --out VERSIONS/vNNN/weights
                           [--weights SERVING] [extra args]

One run at a time; annotations that arrive during a run count for the next. The run's
`finetune_report.json` compares the serving model ("before", it is the run's starting weights) with
the new one ("after") on the same validation split: the new version is loaded in the background and
swapped in only when PCK2D@0.05 is not lower and PA-MPJPE (where both exist) not higher; otherwise it
is kept on disk as `rejected`, with the reason. Everything is recorded in VERSIONS/state.json
(written atomically); a restart serves the last accepted version, and a run cut short (the trainer
or the backend killed) is marked `failed` with its data and partial folder left in place.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from handos.errors import HandosError

log = logging.getLogger("annotate.training")
STATE_FORMAT = "handos.backend_versions/1"
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
START_EVENT = "START_TRAINING"
PCK_KEY, PA_KEY = "pck2d@0.05", "pa_mpjpe_mm"
REPORT_NAME = "finetune_report.json"
DEFAULT_COMMAND = (sys.executable, "-m", "handos", "train")
SECRET_ENV = ("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_USER_TOKEN", "LABEL_STUDIO_PASSWORD", "BASIC_AUTH_PASS")


class TrainingError(HandosError):
    """A fine-tuning run could not be prepared, run or loaded."""


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to `path` through a temp file in the same folder, fsynced, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def judge(report: dict[str, Any]) -> tuple[bool, str]:
    """(accept, why) for a finetune_report: the new weights ("after") no worse than the serving ones ("before")."""
    before, after = report.get("before"), report.get("after")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return False, "the fine-tuning report has no before/after validation metrics"
    n_val = (report.get("split") or {}).get("val")
    on = f" on {n_val} validation images" if n_val is not None else ""
    b, a = before.get(PCK_KEY), after.get(PCK_KEY)
    if not isinstance(b, (int, float)) or not isinstance(a, (int, float)):
        return False, f"no PCK2D@0.05 to compare{on} (before {b}, after {a})"
    if a < b:
        return False, f"PCK2D@0.05 fell from {b:.4f} to {a:.4f}{on}"
    why = f"PCK2D@0.05 {b:.4f} -> {a:.4f}"
    pb, pa = before.get(PA_KEY), after.get(PA_KEY)
    if isinstance(pb, (int, float)) and isinstance(pa, (int, float)):
        if pa > pb:
            return False, f"PA-MPJPE rose from {pb:.2f} to {pa:.2f} mm{on} (PCK2D@0.05 {b:.4f} -> {a:.4f})"
        why += f", PA-MPJPE {pb:.2f} -> {pa:.2f} mm"
    return True, why + f"{on}: no worse than the serving model"


def annotation_ids(body: dict[str, Any]) -> list[int | str]:
    """The submitted (not skipped) annotation ids a Label Studio webhook payload names."""
    ann = body.get("annotation")
    anns = ann if isinstance(ann, list) else [ann] if isinstance(ann, dict) else []
    return [a["id"] for a in anns if isinstance(a, dict) and a.get("id") is not None and not a.get("was_cancelled")]


def project_id(body: dict[str, Any]) -> int | None:
    """The project a webhook payload is about (its `project` object, else the annotation's or task's field)."""
    for cand in (body.get("project"), body.get("annotation"), body.get("task")):
        if isinstance(cand, dict):
            pid = cand.get("id") if cand is body.get("project") else cand.get("project")
            if isinstance(pid, dict):
                pid = pid.get("id")
            if pid is not None:
                try:
                    return int(pid)
                except (TypeError, ValueError):
                    continue
    return None


class NamedPredictor:
    """A loaded model whose `version` names the backend version it came from (e.g. handos-0.1-ab12cd34-v003)."""

    def __init__(self, predictor: Any, name: str) -> None:
        """Wrap `predictor`; every attribute but `version` is the predictor's."""
        self._inner, self.name = predictor, name
        self.version = f"{predictor.version}-{name}"

    def record(self, image: Any, camera: Any = None, file: str | None = None, include_vertices: bool = False,
               **kwargs: Any) -> dict:
        """One image -> a handos.prediction/1 record (the wrapped model's; `boxes=` and other options passed on)."""
        return self._inner.record(image, camera=camera, file=file, include_vertices=include_vertices, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner(*args, **kwargs)


def _sniff_ext(raw: bytes) -> str:
    if raw[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return ".webp"
    return ".img"


def export_for_training(fetcher: Any, project: int, out_dir: Path, image_cache: Path,
                        client: Any = None) -> tuple[Path, dict[str, Any]]:
    """Export `project`'s submitted annotations to OUT/train.json (+ eval.json, raw.json); returns (train.json, stats).

    The same export and conversion as `handos label --export` (push.export_tasks, convert.export_to_coco); images that exist only on Label Studio
    are fetched once (media paths only, through `fetcher`) into `image_cache` so the trainer can read them.
    """
    from annotate import convert, push

    if client is None:
        client = push.connect(fetcher.ls_url or "", fetcher.api_key)
    tasks = push.export_tasks(client, project)
    coco = convert.export_to_coco(tasks, local_root=fetcher.local_root, fetch=fetcher.fetch)
    image_cache.mkdir(parents=True, exist_ok=True)
    fetched = 0
    for img in coco["images"]:
        if img.get("file_name") and Path(img["file_name"]).is_file():
            continue
        url = img.get("image_url")
        if not url:
            continue
        stem = str(img.get("handos_key") or hashlib.sha256(str(url).encode()).hexdigest()[:32])
        found = next((p for p in image_cache.glob(stem + ".*") if not p.name.endswith(".tmp")), None)
        if found is None:
            raw = fetcher.fetch(url)
            found = image_cache / (stem + _sniff_ext(raw))
            tmp = found.with_name(found.name + ".tmp")
            tmp.write_bytes(raw)
            tmp.replace(found)
            fetched += 1
        img["file_name"] = str(found.resolve())
    coco["stats"]["fetched_images"] = fetched
    out_dir.mkdir(parents=True, exist_ok=True)
    train = out_dir / "train.json"
    write_json_atomic(out_dir / "raw.json", tasks)
    write_json_atomic(out_dir / "eval.json", convert.coco_to_eval(coco))
    write_json_atomic(train, coco)
    return train, coco["stats"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Trainer:
    """Counts annotation webhooks, runs the fine-tuning command in the background and switches versions."""

    def __init__(self, versions_dir: str | os.PathLike, train_every: int = 20, command: Sequence[str] | None = None,
                 extra_args: Sequence[str] = (), base_weights: str | None = None, device: str = "auto",
                 loader: Callable[[str], Any] | None = None, project: int | None = None,
                 client_factory: Callable[[], Any] | None = None) -> None:
        """`command` (default `python -m handos train`) gets `--finetune DATA --out DIR [--weights W]` + `extra_args`.

        `loader(weights_dir)` loads a version (default handos.load on `device`); `project` restricts
        training to one project's events (default: the project the events come from);
        `client_factory` makes the Label Studio client (default from the backend's URL and key).
        """
        if train_every < 1:
            raise TrainingError("--train-every must be >= 1")
        self.dir = Path(versions_dir).resolve()
        self.state_path = self.dir / "state.json"
        self.train_every = int(train_every)
        self.command = list(command or DEFAULT_COMMAND)
        self.extra_args = list(extra_args)
        self.base_weights, self.device, self.project = base_weights, device, project
        self._loader = loader
        self._client_factory = client_factory
        self.backend: Any = None
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._closing = False
        self.state = self._read_state()

    # --- state ---------------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        fresh = {"format": STATE_FORMAT, "serving": None, "project": None, "pending": [], "versions": []}
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return fresh
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TrainingError(f"cannot read {self.state_path}: {err}; move it away to start a fresh history") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise TrainingError(f"{self.state_path} is not a handos versions file ({STATE_FORMAT})")
        for v in state["versions"]:
            if v.get("status") == "training":  # the backend stopped mid-run: nothing was switched
                v.update(status="failed", finished_at=_now(),
                         reason="interrupted: the backend stopped during training (data and partial folder kept)")
                state["pending"] = list(dict.fromkeys(list(v.get("annotation_ids") or []) + list(state["pending"])))
        return {**fresh, **state}

    def _save(self) -> None:
        write_json_atomic(self.state_path, self.state)

    def _version(self, name: str) -> dict[str, Any]:
        return next(v for v in self.state["versions"] if v["name"] == name)

    # --- serving -------------------------------------------------------------------------------------
    def load(self, weights_dir: str) -> Any:
        """Load a version's weights (the injected loader, else handos.load)."""
        if self._loader is not None:
            return self._loader(weights_dir)
        import handos

        return handos.load(weights=weights_dir, device=self.device)

    def serving_weights(self) -> str | None:
        """The weights the serving model was loaded from (a version folder, else the backend's --weights)."""
        name = self.state.get("serving")
        return str(self.dir / name / "weights") if name else self.base_weights

    def attach(self, backend: Any) -> None:
        """Bind to the backend and serve the last accepted version (falling back to the base model if it will not load)."""
        self.backend = backend
        if not getattr(backend.fetcher, "ls_url", None) or not getattr(backend.fetcher, "api_key", None):
            log.warning("training from annotations needs --ls-url (or LABEL_STUDIO_URL) and LABEL_STUDIO_API_KEY to "
                        "export them; webhooks are counted, but no run can start")
        name = self.state.get("serving")
        if not name:
            return
        try:
            model = NamedPredictor(self.load(str(self.dir / name / "weights")), name)
        except Exception as err:  # a version folder removed or damaged since: keep serving the base model
            msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            log.error("cannot load serving version %s (%s); serving the base model", name, msg)
            with self._lock:
                v = self._version(name)
                v.update(status="failed", reason=f"could not be loaded at restart: {msg}")
                self.state["serving"] = None
                self._save()
            return
        with backend.lock:
            backend._predictor = model
        log.info("serving %s (%s)", name, model.version)

    # --- events --------------------------------------------------------------------------------------
    def on_webhook(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /webhook: count submitted annotations; start a run after `train_every` new ones (or on START_TRAINING)."""
        action = body.get("action")
        pid = project_id(body)
        if self.project is not None and pid is not None and pid != self.project:
            return 200, {"status": "ignored", "reason": f"this backend trains on project {self.project} only"}
        if action == START_EVENT:
            return self.start(pid, trigger="START_TRAINING")
        if action not in TRAIN_EVENTS:
            return 200, {"status": "ignored", "reason": f"no training on {action}"}
        ids = annotation_ids(body)
        with self._lock:
            if pid is not None:
                if self.state.get("project") not in (None, pid):
                    log.warning("annotations from project %s after project %s: runs export the latest project only",
                                pid, self.state.get("project"))
                self.state["project"] = pid
            pending = list(dict.fromkeys(list(self.state["pending"]) + [f"{pid}:{i}" for i in ids]))
            self.state["pending"] = pending
            self._save()
            running = self.running
        status = {"status": "ok", "pending": len(pending), "train_every": self.train_every, "training": running}
        if len(pending) >= self.train_every and not running:
            code, started = self.start(pid, trigger=f"{len(pending)} new annotations")
            status.update(started)  # a run that cannot start says why (`error`); the webhook itself was taken
        return 200, status

    @property
    def running(self) -> bool:
        """True while a fine-tuning run is in progress (a run's own thread, finishing, does not count)."""
        t = self._thread
        return t is not None and t.is_alive() and t is not threading.current_thread()

    def start(self, project: int | None = None, trigger: str = "POST /train") -> tuple[int, dict[str, Any]]:
        """Start a run now on `project` (default: the last project seen) unless one is running."""
        with self._lock:
            if self._closing:
                return 503, {"status": "closing"}
            if self.running:
                return 200, {"status": "busy", "training": self._current}
            pid = project if project is not None else (self.project or self.state.get("project"))
            if pid is None:
                return 400, {"error": "no project to train on yet: no annotation webhook has named one"}
            if self.backend is None or getattr(self.backend.fetcher, "ls_url", None) is None:
                return 400, {"error": "training needs the Label Studio URL and key (--ls-url, LABEL_STUDIO_API_KEY)"}
            name = self._next_name()
            consumed = list(self.state["pending"])
            self.state["pending"] = []
            self.state["project"] = pid
            version = {"name": name, "status": "training", "project": pid, "trigger": trigger,
                       "annotation_ids": consumed, "new_annotations": len(consumed),
                       "started_weights": self.serving_weights(), "started_at": _now(), "finished_at": None,
                       "path": str(self.dir / name), "metrics": None, "reason": None, "model_version": None}
            self.state["versions"].append(version)
            self._save()
            self._current = name
            self._thread = threading.Thread(target=self._run, args=(name,), name=f"handos-train-{name}", daemon=True)
            self._thread.start()
        log.info("training %s on project %s (%s)", name, pid, trigger)
        return 200, {"status": "training", "training": name}

    def _next_name(self) -> str:
        used = [int(v["name"][1:]) for v in self.state["versions"] if v["name"][1:].isdigit()]
        if self.dir.is_dir():
            used += [int(p.name[1:]) for p in self.dir.glob("v[0-9]*") if p.name[1:].isdigit()]
        return f"v{max(used, default=0) + 1:03d}"

    # --- the run -------------------------------------------------------------------------------------
    def _run(self, name: str) -> None:
        """Export, fine-tune, judge, load, swap: every outcome ends in the version's status and reason."""
        vdir = self.dir / name
        try:
            status, reason, extra = self._train(name, vdir)
        except Exception as err:  # every failure becomes the version's reason; the serving model is untouched
            msg = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            status, reason, extra = "failed", msg, {}
        requeue = extra.pop("requeue", False)
        with self._lock:
            v = self._version(name)
            n_new = len(self.state["pending"])
            if requeue:  # killed from outside: its annotations count again (but start no run by themselves)
                self.state["pending"] = list(dict.fromkeys(list(v["annotation_ids"]) + list(self.state["pending"])))
            if status == "serving":
                old = self.state.get("serving")
                if old:
                    self._version(old)["status"] = "superseded"
                self.state["serving"] = name
            v.update(status=status, reason=reason, finished_at=_now(), **extra)
            self._proc = None
            self._save()
        (log.info if status == "serving" else log.warning)("version %s %s: %s", name, status, reason)
        with self._lock:
            if n_new >= self.train_every and not self._closing:  # annotations that came in during this run
                self.start(trigger=f"{n_new} new annotations (arrived during the previous run)")

    def _train(self, name: str, vdir: Path) -> tuple[str, str, dict[str, Any]]:
        v = self._version(name)
        fetcher = self.backend.fetcher
        client = self._client_factory() if self._client_factory else None
        data, stats = export_for_training(fetcher, v["project"], vdir / "data", self.dir / "images", client=client)
        extra: dict[str, Any] = {"data": str(data), "export": {k: stats.get(k) for k in ("tasks", "images", "hands",
                                                                                      "skipped_unlabelled", "skipped")}}
        if not stats["images"]:
            return "failed", "no submitted annotations with images to train on", extra
        out = vdir / "weights"
        cmd = [*self.command, "--finetune", str(data), "--out", str(out)]
        if v.get("started_weights"):
            cmd += ["--weights", str(v["started_weights"])]
        cmd += self.extra_args
        logf = vdir / "train.log"
        t0 = time.monotonic()
        with open(logf, "ab") as fh:
            fh.write(f"$ {shlex.join(cmd)}\n".encode())
            fh.flush()
            with self._lock:
                if self._closing:
                    return "failed", "the backend stopped before training began", extra
                env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}  # the trainer needs no keys
                self._proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              env=env, start_new_session=True)
                v["pid"] = self._proc.pid
                self._save()
            rc = self._proc.wait()
        extra["seconds"] = round(time.monotonic() - t0, 1)
        extra["log"] = str(logf)
        if rc != 0:
            how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with {rc}"
            extra["requeue"] = rc < 0
            return "failed", f"the trainer {how} ({_last_line(logf)})", extra
        try:
            report = json.loads((out / REPORT_NAME).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return "failed", f"the trainer wrote no readable {REPORT_NAME} ({type(err).__name__})", extra
        if not isinstance(report, dict):
            return "failed", f"{REPORT_NAME} is not a JSON object", extra
        extra["metrics"] = {k: report.get(k) for k in ("before", "after", "split", "steps", "seconds")}
        ok, why = judge(report)
        if not ok:
            return "rejected", f"kept {self.state.get('serving') or 'the base model'}: {why}", extra
        try:
            model = NamedPredictor(self.load(str(out)), name)
        except Exception as err:
            msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            return "failed", f"validated ({why}) but could not be loaded: {msg}", extra
        backend = self.backend
        with backend.lock:  # waits for an inference in progress; the next one uses the new model
            backend._predictor = model
        extra["model_version"] = model.version
        return "serving", why, extra

    # --- reporting and shutdown ----------------------------------------------------------------------
    def versions(self) -> dict[str, Any]:
        """GET /versions: Label Studio's `versions` (model version strings) plus every run's status, metrics and reason."""
        with self._lock:
            history = [{k: v.get(k) for k in ("name", "status", "model_version", "project", "trigger", "new_annotations",
                                              "started_at", "finished_at", "metrics", "reason", "path", "export")}
                       for v in self.state["versions"]]
            serving = self.state.get("serving")
            pending = len(self.state["pending"])
        current = getattr(self.backend, "version", None) if self.backend is not None else None
        names = [current] if current else []
        names += [h["model_version"] for h in reversed(history)
                  if h["model_version"] and h["model_version"] not in names]
        return {"versions": names, "serving": serving or "base", "model_version": current,
                "training": self._current if self.running else None, "pending": pending,
                "train_every": self.train_every, "history": history}

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the current run (and any run it chained) to end; True when none is running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            t = self._thread
            if t is None or not t.is_alive():
                return True
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                return False

    def close(self, timeout: float = 10.0) -> None:
        """Stop a running trainer (its process group; SIGTERM, then SIGKILL) and wait for the run to be recorded."""
        with self._lock:
            self._closing = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        t = self._thread
        if t is not None:
            t.join(timeout)

    _current: str | None = None


def _last_line(path: Path) -> str:
    """The last non-empty line of a log file (for failure reasons), shortened."""
    try:
        lines = [ln.strip() for ln in path.read_bytes()[-4000:].decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return (lines[-1][:200] if lines and not lines[-1].startswith("$ ") else "no output")


def trainer_from_args(args: Any) -> Trainer:
    """A Trainer from the backend's command-line options (--versions-dir, --train-every, --train-command, ...)."""
    return Trainer(args.versions_dir, train_every=args.train_every,
                   command=shlex.split(args.train_command) if args.train_command else None,
                   extra_args=shlex.split(args.train_args or ""), base_weights=args.weights, device=args.device,
                   project=args.train_project)
