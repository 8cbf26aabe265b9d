"""What the image controls do: run the model on an image, redraw from the kept result, push to Label Studio."""
from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
from PIL import Image

from demo.clips import ClipCallbacks
from demo.config import DemoConfig
from demo.crops import hand_crops
from demo.errors import panel_message
from demo.export import new_workdir, save_annotated, write_downloads
from demo.figures import hands_figure
from demo.images import load_upload
from demo.models import DEFAULT_RECALL, ModelCache, gpu_decorator
from demo.overlays import Layers, annotate
from demo.results import ClipResult, ImageResult, below_threshold, faces_of, hands_table, select_hands
from demo.search import find_hands
from handos.errors import HandosError, InputError, RemoteError
from handos.io.camera import Camera
from handos.io.images import load_image
from handos.io.schema import prediction_record

# the image outputs, in order: state, annotated image, 3D plot, table, downloads, status, per-hand crops
N_IMAGE_OUTPUTS = 7


class Callbacks:
    """The demo's image and Label Studio handlers, bound to a model cache and the limits."""

    def __init__(self, cache: ModelCache, cfg: DemoConfig, clips: ClipCallbacks | None = None) -> None:
        """Keep the model cache, config and the clip handlers (redraws of a kept clip go there)."""
        self.cache = cache
        self.cfg = cfg
        self.clips = clips or ClipCallbacks(cache, cfg)
        self._infer_image = gpu_decorator(60)(self._infer_image_impl)

    # ---- images -------------------------------------------------------------------------------
    def _infer_image_impl(self, path: str, device: str, recall: str, max_hands: int) -> ImageResult:
        """Load (downscaling huge photos), validate and find every hand candidate, looking harder if none."""
        upload = load_upload(path)
        loaded = upload.image
        if upload.downscaled:  # redraws read the downscaled copy, not the huge original
            kept = new_workdir("upload") / (Path(path).stem + ".downscaled.jpg")
            Image.fromarray(loaded.rgb).save(kept, "JPEG", quality=93)
            path = str(kept)
        camera = Camera.from_any(None, loaded.width, loaded.height, loaded.focal_35mm)
        found = find_hands(self.cache, loaded, camera, device, recall or DEFAULT_RECALL, int(max_hands))
        model = found.model
        return ImageResult(
            path=path, name=Path(upload.image.name or path).name, hands=found.hands, camera=camera, width=loaded.width,
            height=loaded.height, model_version=str(getattr(model, "version", "unknown")), faces=faces_of(model),
            seconds=found.seconds, device=str(getattr(model, "device", device)),
            notes=[n for n in (found.note(), upload.note()) if n],
        )

    def run_image(self, path, threshold, max_hands, layers, device, recall=DEFAULT_RECALL):
        """Button 'Find hands': predict on the image, then draw every output."""
        if not path:
            raise InputError("upload an image, take a webcam snapshot, or pick an example first")
        result = self._infer_image(path, device, recall, max_hands)
        return (result, *self.draw_image(result, threshold, max_hands, layers))

    def run_image_if_any(self, path, threshold, max_hands, layers, device, recall=DEFAULT_RECALL):
        """A new upload, snapshot or example: run at once; a cleared input changes nothing."""
        if not path:
            return tuple(gr.skip() for _ in range(N_IMAGE_OUTPUTS))
        return self.run_image(path, threshold, max_hands, layers, device, recall)

    def rerun(self, result, threshold, max_hands, layers, device, recall=DEFAULT_RECALL):
        """Max hands or recall changed: run the image again, or redraw a kept clip's video.

        Returns the image outputs and the clip video (state, annotated, plot, table, downloads, status, crops, video).
        """
        if isinstance(result, ImageResult):
            return (*self.run_image(result.path, threshold, max_hands, layers, device, recall), gr.skip())
        if isinstance(result, ClipResult):
            return (gr.skip(), *self.redraw(result, threshold, max_hands, layers))
        return tuple(gr.skip() for _ in range(N_IMAGE_OUTPUTS + 1))

    def redraw(self, result, threshold, max_hands, layers):
        """Threshold or layers changed: redraw from the kept result, no model run.

        Returns (annotated, plot, table, downloads, status, crops, clip video); a kept clip gets a new video.
        """
        if isinstance(result, ClipResult):
            video, files, fig, rows, status = self.clips.redraw(result, threshold, max_hands, layers)
            return gr.skip(), fig, rows, files, status, gr.skip(), video
        if result is None:
            return (gr.skip(),) * 7
        return (*self.draw_image(result, threshold, max_hands, layers), gr.skip())

    def draw_image(self, result: ImageResult, threshold, max_hands, layers):
        """Overlay, 3D figure, table, downloads, status line and crops from a kept result (no model run)."""
        hands = select_hands(result.hands, threshold, max_hands)
        rgb = load_image(result.path).rgb
        faces_for = result.faces.__getitem__
        K = result.camera.matrix()
        image = annotate(rgb, hands, K, faces_for, Layers.from_names(layers))
        fig = hands_figure(hands, faces_for)
        record = prediction_record(result.name, result.width, result.height, result.camera.to_dict(), hands,
                                   result.model_version, include_vertices=True)
        stem = Path(result.name).stem or "image"
        workdir = new_workdir("image")
        files = write_downloads(workdir, stem, record, hands, faces_for)
        shown = save_annotated(image, workdir / f"{stem}.annotated")
        crops = []
        for i, (crop, caption) in enumerate(hand_crops(rgb, hands, K, faces_for)):
            crop_path = workdir / f"{stem}.hand{i}.jpg"
            Image.fromarray(crop).save(crop_path, "JPEG", quality=90)
            crops.append((str(crop_path), caption))
        return shown, fig, hands_table(hands), files, image_status(result, hands, threshold), crops


def image_status(result: ImageResult, hands, threshold) -> str:
    """'**2 hands** found in 0.31 s on cpu (1 more below the threshold 0.90) · <notes> · model `v` · 640x480'."""
    n = len(hands)
    below = below_threshold(result.hands, threshold)
    hidden = len(result.hands) - n - below  # over the hand limit
    extra = []
    if below:
        extra.append(f"{below} more below the threshold {float(threshold):.2f}")
    if hidden > 0:
        extra.append(f"{hidden} more over the hand limit")
    return (f"**{n} hand{'s' if n != 1 else ''}** found in {result.seconds:.2f} s on {result.device}"
            + (f" ({'; '.join(extra)})" if extra else "")
            + "".join(f" · {note}" for note in result.notes)
            + f" · model `{result.model_version}` · {result.width}x{result.height}")


class LabelStudioPanel:
    """The Label Studio panel: push the current image result as pre-annotations."""

    def __init__(self, cfg: DemoConfig) -> None:
        """Keep the config (names of the URL and key environment variables)."""
        self.cfg = cfg

    def push(self, result, threshold, max_hands, url, api_key, project):
        """Push the current image result; answer with links to the tasks (errors worded for the panel)."""
        if not isinstance(result, ImageResult):
            raise InputError("run the model on an image first; Label Studio gets the current image result")
        url = (url or "").strip() or os.environ.get(self.cfg.ls_url_env, "")
        key = (api_key or "").strip() or os.environ.get(self.cfg.ls_key_env, "")
        if not url:
            raise InputError(f"fill in the Label Studio URL above, e.g. http://127.0.0.1:8080 "
                             f"(or start the demo with {self.cfg.ls_url_env} set)")
        if not url.startswith(("http://", "https://")):
            raise InputError(f"the URL must start with http:// or https://, e.g. http://127.0.0.1:8080; got {url[:80]!r}")
        if not key:
            raise InputError("paste your Label Studio access token (Account & Settings) into the API key field "
                             f"(or start the demo with {self.cfg.ls_key_env} set)")
        project = (project or "").strip() or "handos pre-annotations"
        from annotate.push import push_records

        hands = select_hands(result.hands, threshold, max_hands)
        record = prediction_record(result.name, result.width, result.height, result.camera.to_dict(), hands,
                                   result.model_version)
        try:
            pushed = push_records([record], [result.path], url, key, int(project) if project.isdigit() else project,
                                  create=True)
        except HandosError as err:  # never echo the key, whatever the message holds
            raise RemoteError(panel_message(str(err), key)) from None
        except Exception as err:  # noqa: BLE001 - the message names the failure, not the request
            raise RemoteError(f"the push to Label Studio failed ({type(err).__name__}); check the URL, API key and "
                              "Project fields") from None
        links = list(pushed.url_of_tasks or [])
        what = "already there" if pushed.skipped and not pushed.created else "pushed"
        shown = ", ".join(f"[task {t}]({u})" for t, u in zip(pushed.task_ids, links)) or "no tasks"
        return (f"{what.capitalize()}: {len(hands)} hand(s) as pre-annotations in project {pushed.project_id}: {shown}"
                + (f" · [project]({pushed.project_url})" if pushed.project_url else ""))


__all__ = ["N_IMAGE_OUTPUTS", "Callbacks", "LabelStudioPanel", "image_status"]
