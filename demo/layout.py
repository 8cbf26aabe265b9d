"""The page: inputs and controls on the left, the annotated image / clip and the 3D view on the right."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from demo import events
from demo.callbacks import Callbacks, LabelStudioPanel
from demo.clips import ClipCallbacks, clip_preview, upload_note
from demo.components import image_input
from demo.config import DemoConfig
from demo.errors import errors_in_view, user_errors
from demo.figures import EMPTY_BEFORE_RUN, hands_figure
from demo.models import DEFAULT_RECALL, RECALL_HELP, RECALL_MODES, ModelCache, cuda_available, device_choices
from demo.overlays import DEFAULT_LAYERS, LAYER_NAMES, UNSURE_HANDEDNESS
from demo.results import TABLE_HEADERS

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_HANDS_LIMIT = 8

INTRO = """# handos: 3D hands from one image
Boxes, 21 keypoints, handedness, 3D joints and a hand mesh per hand, placed in the camera frame.
Upload an image, take a webcam snapshot or pick an example; or run a short clip in the **Clip** tab.
Runs on the CPU by default, on CUDA when present."""

# The frame slider moves the annotated video (in the browser: no server round trip).
SEEK_JS = """(i, times) => {
  const t = JSON.parse(times || "[]");
  const v = document.querySelector("#clip-output video");
  if (v && t.length) { v.pause(); v.currentTime = t[Math.max(0, Math.min(t.length - 1, Math.round(i)))]; }
  return [];
}"""

# Said on load when the browser offers no camera (or no camera API at all: plain http off localhost).
WEBCAM_JS = """async () => {
  const md = navigator.mediaDevices;
  if (!md || !md.enumerateDevices) {
    return "**Webcam:** this browser gives the page no camera access (it needs https or localhost); upload a photo instead.";
  }
  try {
    const devices = await md.enumerateDevices();
    if (devices.some(d => d.kind === "videoinput")) return "";
  } catch (e) {}
  return "**Webcam:** no camera found on this device; upload a photo or pick an example instead.";
}"""

# After a failed run on an unusable file (empty, text, truncated ...), the input's preview is a broken picture:
# the browser clears it (a server-side update of the input would swap in Gradio's own upload handling).
CLEAR_BROKEN_PREVIEW_JS = """() => {
  const img = document.querySelector("#image-input img");
  if (img && img.complete && img.naturalWidth === 0) {
    const clear = [...document.querySelectorAll("#image-input button")].find(
      b => /clear|remove/i.test((b.getAttribute("aria-label") || "") + " " + (b.title || "")));
    if (clear) clear.click();
  }
  return [];
}"""

CLIP_TYPES = [".mp4", ".mov", ".m4v", ".webm", ".avi", ".mkv", ".mpg", ".mpeg", ".ogv", ".wmv", ".flv", ".3gp", ".ts"]


# the example scenes in display order (the keys of SCENES in tools/make_examples.py)
EXAMPLE_ORDER = ("two_hands_desk", "open_palm_wall", "relaxed_tiles", "ok_bokeh")


def example_images() -> list[str]:
    """The shipped example images (made by tools/make_examples.py), in the order of its SCENES."""
    order = {name: i for i, name in enumerate(EXAMPLE_ORDER)}
    return [str(p) for p in sorted(EXAMPLES_DIR.glob("*.jpg"), key=lambda p: (order.get(p.stem, len(order)), p.name))]


def build_demo(model_factory: Callable[[str], Any] | None = None, cfg: DemoConfig | None = None,
               preload: bool = False) -> gr.Blocks:
    """The Gradio Blocks app; `model_factory(device)` defaults to handos.load; `preload` loads it now."""
    cfg = cfg or DemoConfig()
    cache = ModelCache(model_factory)
    if preload:
        cache.get(cfg.default_device)
    clips = ClipCallbacks(cache, cfg)
    cb = Callbacks(cache, cfg, clips)
    ls = LabelStudioPanel(cfg)
    devices = device_choices()
    default_device = cfg.default_device if cfg.default_device in devices else "auto"

    with gr.Blocks(title="handos: 3D hand reconstruction", fill_width=True, delete_cache=(3600, 7200)) as demo:
        gr.Markdown(INTRO)
        state = gr.State(None, time_to_live=cfg.state_ttl_s)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                with gr.Tabs():
                    with gr.Tab("Image", id="image"):
                        image_in = image_input(sources=["upload", "webcam", "clipboard"],
                                              label="Image (any common format; EXIF orientation honoured)",
                                              elem_id="image-input", height=320)
                        webcam_note = gr.Markdown("", elem_id="webcam-note")
                        run_btn = gr.Button("Find hands", variant="primary", elem_id="run-image")
                        examples = example_images()
                        if examples:
                            gr.Examples(examples=[[p] for p in examples], inputs=[image_in], label="Examples (rendered by handos)",
                                        examples_per_page=8, elem_id="examples")
                    with gr.Tab("Clip", id="clip"):
                        clip_in = gr.File(file_types=CLIP_TYPES, type="filepath", elem_id="clip-input",
                                          label=f"Clip (up to {cfg.max_clip_seconds:g} s: mp4, mov, webm, avi, mkv ...)")
                        clip_view = gr.Video(label="Preview", interactive=False, elem_id="clip-preview", height=240)
                        smooth = gr.Checkbox(True, label="Smooth over time (One-Euro)")
                        clip_btn = gr.Button("Run on clip", variant="primary", elem_id="run-clip")
                with gr.Accordion("Settings", open=True):
                    threshold = gr.Slider(0.05, 1.0, value=cfg.default_threshold, step=0.05, label="Score threshold",
                                          info="hands under it are hidden, not lost: the status line counts them",
                                          elem_id="threshold")
                    max_hands = gr.Slider(1, MAX_HANDS_LIMIT, value=cfg.default_max_hands, step=1, label="Max hands",
                                          elem_id="max-hands")
                    recall = gr.Radio(list(RECALL_MODES), value=DEFAULT_RECALL, label="Recall: how hard to look for hands",
                                      info="; ".join(f"{k}: {v}" for k, v in RECALL_HELP.items())
                                      + ". When nothing is found, the demo looks again with search (not after off).",
                                      elem_id="recall")
                    layers = gr.CheckboxGroup(list(LAYER_NAMES), value=list(DEFAULT_LAYERS), label="Show on the image and clip",
                                              info=f"labels: handedness and its own confidence, '?' under {UNSURE_HANDEDNESS:g}",
                                              elem_id="layers")
                    device = gr.Radio(devices, value=default_device, label="Device",
                                      info="auto: CUDA when present" + (" (found)" if cuda_available() else " (none here: CPU)"),
                                      elem_id="device")
                with gr.Accordion("Label Studio", open=False, elem_id="ls-panel"):
                    gr.Markdown(f"Push the current image result as pre-annotations. URL and key default to "
                                f"`{cfg.ls_url_env}` / `{cfg.ls_key_env}` on the server; the key is never shown or returned.")
                    ls_url = gr.Textbox(value=os.environ.get(cfg.ls_url_env, ""), label="Label Studio URL",
                                        placeholder="http://127.0.0.1:8080")
                    ls_key = gr.Textbox(value="", type="password", label="API key",
                                        placeholder=f"empty: use {cfg.ls_key_env} from the server's environment")
                    ls_project = gr.Textbox(value="handos pre-annotations", label="Project (title or id; created if missing)")
                    push_btn = gr.Button("Push to Label Studio", elem_id="push-ls")
                    push_out = gr.Markdown(elem_id="ls-result", label="Label Studio result", show_label=False)
            with gr.Column(scale=3, min_width=480):
                status = gr.Markdown("Pick an example or upload an image, then press **Find hands**.", elem_id="status",
                                     label="status", show_label=False)
                with gr.Tabs() as output_tabs:
                    with gr.Tab("Image result", id="image-out"):
                        annotated = gr.Image(label="Hands", format="png", interactive=False, elem_id="annotated",
                                             buttons=["download", "fullscreen"])
                        crops = gr.Gallery(label="Each hand, zoomed: as it is, and with its mesh and skeleton",
                                           columns=2, height="auto", object_fit="contain", elem_id="hand-crops",
                                           interactive=False)
                    with gr.Tab("Clip result", id="clip-out"):
                        clip_out = gr.Video(label="Annotated clip (H.264)", interactive=False, elem_id="clip-output")
                        frame = gr.Slider(0, 1, value=0, step=1, label="Frame (after a clip run)", elem_id="frame-slider")
                plot = gr.Plot(value=hands_figure([], None, empty_text=EMPTY_BEFORE_RUN), label="3D, camera frame (drag to rotate)",
                               elem_id="plot3d")
                table = gr.Dataframe(headers=TABLE_HEADERS, value=[], label="Hands", interactive=False, elem_id="hands-table")
                files = gr.File(file_count="multiple", label="Downloads: predictions JSON (handos.prediction/1), meshes OBJ / GLB, clip MP4 / JSONL",
                                interactive=False, elem_id="downloads")
                seek_times = gr.Textbox("[]", visible="hidden", elem_id="seek-times", label="frame times (s)")
                # API callers may name any device (and get a one-line reason when it is missing); the page offers
                # only the devices present
                device_api = gr.Textbox(default_device, visible=False, label="Device")  # the API names it "device"
        with gr.Row(visible=False):  # the API endpoints (errors raised, as clients expect); the page uses the events below
            api = {name: gr.Button(name) for name in ("predict_image", "predict_clip", "clip_frame", "redraw", "push_labelstudio")}

        image_outputs = [state, annotated, plot, table, files, status, crops]
        run_inputs = [image_in, threshold, max_hands, layers, device, recall]
        redraw_inputs = [state, threshold, max_hands, layers]
        redraw_outputs = [annotated, plot, table, files, status, crops, clip_out]
        clip_inputs = [clip_in, threshold, max_hands, layers, device, smooth, recall]
        clip_outputs = [state, clip_out, frame, plot, table, files, status, seek_times]
        push_inputs = [state, threshold, max_hands, ls_url, ls_key, ls_project]
        model_run = dict(concurrency_limit=cfg.image_concurrency, concurrency_id="model")
        clip_run = dict(concurrency_limit=cfg.clip_concurrency, concurrency_id="clip")

        def show_tab(tab_id: str):
            return lambda: gr.Tabs(selected=tab_id)

        # API endpoints
        api_run_inputs = [image_in, threshold, max_hands, layers, device_api, recall]
        api_clip_inputs = [clip_in, threshold, max_hands, layers, device_api, smooth, recall]
        api["predict_image"].click(user_errors(cb.run_image), api_run_inputs, image_outputs, api_name="predict_image",
                                   **model_run)
        api["predict_clip"].click(user_errors(clips.run_clip), api_clip_inputs, clip_outputs, api_name="predict_clip",
                                  **clip_run)
        api["clip_frame"].click(user_errors(clips.show_frame), [state, frame], [plot, table, status], api_name="clip_frame")
        api["redraw"].click(user_errors(cb.redraw), redraw_inputs, redraw_outputs, api_name="redraw", **clip_run)
        api["push_labelstudio"].click(user_errors(ls.push), push_inputs, push_out, api_name="push_labelstudio",
                                      concurrency_limit=2)

        # the page: failures leave their message in the status line (or the Label Studio panel)
        private = dict(api_visibility="private")
        run_btn.click(show_tab("image-out"), None, output_tabs, queue=False, **private).then(
            errors_in_view(cb.run_image, events.image_failed), run_inputs, image_outputs, **private, **model_run).then(
            None, None, None, js=CLEAR_BROKEN_PREVIEW_JS, queue=False, **private)
        image_in.change(show_tab("image-out"), None, output_tabs, queue=False, **private).then(
            errors_in_view(cb.run_image_if_any, events.image_failed), run_inputs, image_outputs, **private,
            **model_run).then(None, None, None, js=CLEAR_BROKEN_PREVIEW_JS, queue=False, **private)
        rerun = errors_in_view(cb.rerun, events.rerun_failed)
        max_hands.release(rerun, [*redraw_inputs, device, recall], [*image_outputs, clip_out], **private, **model_run)
        recall.change(rerun, [*redraw_inputs, device, recall], [*image_outputs, clip_out], **private, **model_run)
        redraw = errors_in_view(cb.redraw, events.redraw_failed)
        threshold.change(redraw, redraw_inputs, redraw_outputs, **private, **clip_run)  # also typed + Enter
        layers.change(redraw, redraw_inputs, redraw_outputs, **private, **clip_run)

        clip_in.change(lambda p: (clip_preview(p), upload_note(p)), clip_in, [clip_view, status], queue=False, **private)
        clip_btn.click(show_tab("clip-out"), None, output_tabs, queue=False, **private).then(
            errors_in_view(clips.run_clip, events.clip_failed), clip_inputs, clip_outputs, show_progress_on=[clip_out, status],
            **private, **clip_run)
        frame.change(None, [frame, seek_times], None, js=SEEK_JS, queue=False, **private)
        frame.change(errors_in_view(clips.show_frame_if_any, events.frame_failed), [state, frame], [plot, table],
                      concurrency_limit=4, **private)

        push_btn.click(errors_in_view(ls.push, events.push_failed), push_inputs, push_out, concurrency_limit=2, **private)
        demo.load(None, None, webcam_note, js=WEBCAM_JS, queue=False, **private)
    return demo
