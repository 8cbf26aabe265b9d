"""What the buttons do: run the model on an image or clip, redraw, pick a clip frame, push to Label Studio."""
from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from demo.clips import frame_outputs
from demo.config import DemoConfig
from demo.export import new_workdir, save_annotated, write_downloads
from demo.figures import hands_figure
from demo.models import ModelCache, gpu_decorator
from demo.overlays import Layers, annotate
from demo.results import ClipResult, ImageResult, faces_of, hands_table, select_hands
from handos.errors import HandosError, InputError
from handos.io.camera import Camera
from handos.io.images import load_image
from handos.io.schema import prediction_record

log = logging.getLogger("handos.demo")


def user_errors(fn: Callable) -> Callable:
    """Turn HandosError into a one-line gr.Error; log anything else and answer with one line too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except HandosError as err:
            raise gr.Error(one_line(str(err)), print_exception=False) from None
        except MemoryError:
            raise gr.Error("out of memory on the server; try a smaller image or clip", print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - the user gets one line, the log the traceback
            log.exception("demo callback %s failed", fn.__name__)
            raise gr.Error(f"internal error ({type(err).__name__}); the server log has the details",
                           print_exception=False) from None

    return wrapper


def one_line(text: str) -> str:
    """The first non-empty line of a message, trimmed."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:500]
    return "error"


class Callbacks:
    """The demo's event handlers, bound to a model cache and the limits."""

    def __init__(self, cache: ModelCache, cfg: DemoConfig) -> None:
        """Keep the model cache and config; wrap inference for Spaces GPUs."""
        self.cache = cache
        self.cfg = cfg
        self._infer_image = gpu_decorator(60)(self._infer_image_impl)

    # ---- images -------------------------------------------------------------------------------
    def _infer_image_impl(self, path: str, device: str, threshold: float, max_hands: int) -> ImageResult:
        """Load, validate and run the model on one image file."""
        try:
            loaded = load_image(path)
        except InputError as err:  # name the user's file, not the server's upload path
            raise InputError(str(err).replace(str(path), Path(path).name)) from None
        model = self.cache.get(device)
        camera = Camera.from_any(None, loaded.width, loaded.height, loaded.focal_35mm)
        t0 = time.perf_counter()
        hands = list(model(loaded, camera=camera, max_hands=int(max_hands), score_threshold=float(threshold)))
        seconds = time.perf_counter() - t0
        return ImageResult(
            path=path, name=Path(path).name, hands=hands, camera=camera, width=loaded.width, height=loaded.height,
            model_version=str(getattr(model, "version", "unknown")), faces=faces_of(model), seconds=seconds,
            device=str(getattr(model, "device", device)),
        )

    def run_image(self, path, threshold, max_hands, layers, device):
        """Button 'Run': predict on the image, then draw every output."""
        if not path:
            raise InputError("upload an image, take a webcam snapshot, or pick an example first")
        result = self._infer_image(path, device, threshold, max_hands)
        return (result, *self.draw_image(result, threshold, max_hands, layers))

    def run_image_if_any(self, path, threshold, max_hands, layers, device):
        """A new upload, snapshot or example: run at once; a cleared input changes nothing."""
        if not path:
            return tuple(gr.skip() for _ in range(6))
        return self.run_image(path, threshold, max_hands, layers, device)

    def rerun(self, result, threshold, max_hands, layers, device):
        """Threshold or max-hands changed: run the image again (clips keep their run, the 3D view is filtered)."""
        if isinstance(result, ImageResult):
            return self.run_image(result.path, threshold, max_hands, layers, device)
        return (gr.skip(), *self.redraw(result, threshold, max_hands, layers))

    def redraw(self, result, threshold, max_hands, layers):
        """Layers changed: redraw from the kept result, no model run."""
        if isinstance(result, ClipResult):
            result.threshold = float(threshold)
            fig, rows, status = frame_outputs(result, result.current, threshold)
            return gr.skip(), fig, rows, gr.skip(), status
        return self.draw_image(result, threshold, max_hands, layers)

    def draw_image(self, result: ImageResult | None, threshold, max_hands, layers):
        """Overlay, 3D figure, table, downloads and status line from a kept result (no model run)."""
        if result is None:
            return None, hands_figure([], None), [], None, "Run the model on an image first."
        hands = select_hands(result.hands, threshold, max_hands)
        rgb = load_image(result.path).rgb
        layers = Layers.from_names(layers)
        faces_for = result.faces.__getitem__
        image = annotate(rgb, hands, result.camera.matrix(), faces_for, layers)
        fig = hands_figure(hands, faces_for)
        record = prediction_record(result.name, result.width, result.height, result.camera.to_dict(), hands,
                                   result.model_version, include_vertices=True)
        stem = Path(result.name).stem or "image"
        workdir = new_workdir("image")
        files = write_downloads(workdir, stem, record, hands, faces_for)
        shown = save_annotated(image, workdir / f"{stem}.annotated")
        n = len(hands)
        hidden = len(result.hands) - n
        status = (f"**{n} hand{'s' if n != 1 else ''}** found in {result.seconds:.2f} s on {result.device}"
                  + (f" ({hidden} more below the threshold or the hand limit)" if hidden else "")
                  + f" · model `{result.model_version}` · {result.width}x{result.height}")
        return shown, fig, hands_table(hands), files, status

    # ---- Label Studio -------------------------------------------------------------------------
    def push_labelstudio(self, result, threshold, max_hands, url, api_key, project):
        """Push the current image result as pre-annotations; answer with a link to the tasks."""
        if not isinstance(result, ImageResult):
            raise InputError("run the model on an image first; Label Studio gets the current image result")
        url = (url or "").strip() or os.environ.get(self.cfg.ls_url_env, "")
        key = (api_key or "").strip() or os.environ.get(self.cfg.ls_key_env, "")
        if not url:
            raise InputError(f"give the Label Studio URL (or set {self.cfg.ls_url_env})")
        if not key:
            raise InputError(f"give a Label Studio API key (or set {self.cfg.ls_key_env})")
        project = (project or "").strip() or "handos pre-annotations"
        from annotate.push import push_records

        hands = select_hands(result.hands, threshold, max_hands)
        record = prediction_record(result.name, result.width, result.height, result.camera.to_dict(), hands,
                                   result.model_version)
        try:
            pushed = push_records([record], [result.path], url, key, int(project) if project.isdigit() else project,
                                  create=True)
        except HandosError as err:  # never echo the key, whatever the message holds
            raise InputError(one_line(str(err)).replace(key, "***")) from None
        except Exception as err:  # noqa: BLE001 - the message names the failure, not the request
            raise InputError(f"Label Studio push failed ({type(err).__name__}); check the URL, key and project") from None
        links = list(pushed.url_of_tasks or [])
        what = "already there" if pushed.skipped and not pushed.created else "pushed"
        shown = ", ".join(f"[task {t}]({u})" for t, u in zip(pushed.task_ids, links)) or "no tasks"
        return (f"{what.capitalize()}: {len(hands)} hand(s) as pre-annotations in project {pushed.project_id}: {shown}"
                + (f" · [project]({pushed.project_url})" if pushed.project_url else ""))
