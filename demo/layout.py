"""The page: inputs and controls on the left, the annotated image / clip and the 3D view on the right."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from demo.callbacks import Callbacks, user_errors
from demo.clips import ClipCallbacks
from demo.components import image_input
from demo.config import DemoConfig
from demo.figures import hands_figure
from demo.models import DEVICES, ModelCache, cuda_available
from demo.overlays import LAYER_NAMES
from demo.results import TABLE_HEADERS

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_HANDS_LIMIT = 8

INTRO = """# handos: 3D hands from one image
Boxes, 21 keypoints, handedness, 3D joints and a hand mesh per hand, placed in the camera frame.
Upload an image, take a webcam snapshot or pick an example; or run a short clip in the **Clip** tab.
Runs on the CPU by default, on CUDA when present."""


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
    cb = Callbacks(cache, cfg)
    clips = ClipCallbacks(cache, cfg)
    default_device = cfg.default_device if cfg.default_device in DEVICES else "auto"

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
                        run_btn = gr.Button("Find hands", variant="primary", elem_id="run-image")
                        examples = example_images()
                        if examples:
                            gr.Examples(examples=[[p] for p in examples], inputs=[image_in], label="Examples (rendered by handos)",
                                        examples_per_page=8, elem_id="examples")
                    with gr.Tab("Clip", id="clip"):
                        clip_in = gr.Video(sources=["upload"], label=f"Clip (up to {cfg.max_clip_seconds:g} s)",
                                           include_audio=True, elem_id="clip-input", height=280)
                        smooth = gr.Checkbox(True, label="Smooth over time (One-Euro)")
                        clip_btn = gr.Button("Run on clip", variant="primary", elem_id="run-clip")
                with gr.Accordion("Settings", open=True):
                    threshold = gr.Slider(0.05, 0.95, value=cfg.default_threshold, step=0.05, label="Score threshold")
                    max_hands = gr.Slider(1, MAX_HANDS_LIMIT, value=cfg.default_max_hands, step=1, label="Max hands")
                    layers = gr.CheckboxGroup(list(LAYER_NAMES), value=list(LAYER_NAMES), label="Show")
                    device = gr.Radio(list(DEVICES), value=default_device, label="Device",
                                      info="auto: CUDA when present" + (" (found)" if cuda_available() else " (none here: CPU)"))
                with gr.Accordion("Label Studio", open=False):
                    gr.Markdown(f"Push the current image result as pre-annotations. URL and key default to "
                                f"`{cfg.ls_url_env}` / `{cfg.ls_key_env}` on the server; the key is never shown or returned.")
                    ls_url = gr.Textbox(value=os.environ.get(cfg.ls_url_env, ""), label="Label Studio URL",
                                        placeholder="http://127.0.0.1:8080")
                    ls_key = gr.Textbox(value="", type="password", label="API key",
                                        placeholder=f"empty: use {cfg.ls_key_env} from the server's environment")
                    ls_project = gr.Textbox(value="handos pre-annotations", label="Project (title or id; created if missing)")
                    push_btn = gr.Button("Push to Label Studio", elem_id="push-ls")
                    push_out = gr.Markdown()
            with gr.Column(scale=3, min_width=480):
                status = gr.Markdown("Pick an example or upload an image, then press **Find hands**.", elem_id="status")
                with gr.Tabs() as output_tabs:
                    with gr.Tab("Image result", id="image-out"):
                        annotated = gr.Image(label="Hands", format="png", interactive=False, elem_id="annotated",
                                             buttons=["download", "fullscreen"])
                    with gr.Tab("Clip result", id="clip-out"):
                        clip_out = gr.Video(label="Annotated clip (H.264)", interactive=False, elem_id="clip-output")
                        frame = gr.Slider(0, 1, value=0, step=1, label="Frame (3D view)", elem_id="frame-slider")
                plot = gr.Plot(value=hands_figure([], None), label="3D, camera frame (drag to rotate)", elem_id="plot3d")
                table = gr.Dataframe(headers=TABLE_HEADERS, value=[], label="Hands", interactive=False, elem_id="hands-table")
                files = gr.File(file_count="multiple", label="Downloads: predictions JSON (handos.prediction/1), meshes OBJ / GLB, clip MP4 / JSONL",
                                interactive=False, elem_id="downloads")

        image_outputs = [state, annotated, plot, table, files, status]
        run_inputs = [image_in, threshold, max_hands, layers, device]

        def show_tab(tab_id: str):
            return lambda: gr.Tabs(selected=tab_id)

        run_image = user_errors(cb.run_image)
        run_btn.click(show_tab("image-out"), None, output_tabs, api_visibility="private", queue=False).then(
            run_image, run_inputs, image_outputs, api_name="predict_image", concurrency_limit=cfg.image_concurrency,
            concurrency_id="model")
        image_in.change(show_tab("image-out"), None, output_tabs, api_visibility="private", queue=False).then(
            user_errors(cb.run_image_if_any), run_inputs, image_outputs, api_visibility="private",
            concurrency_limit=cfg.image_concurrency, concurrency_id="model")
        for slider in (threshold, max_hands):
            slider.release(user_errors(cb.rerun), [state, threshold, max_hands, layers, device], image_outputs,
                           api_visibility="private", concurrency_limit=cfg.image_concurrency, concurrency_id="model")
        layers.change(user_errors(cb.redraw), [state, threshold, max_hands, layers], image_outputs[1:],
                      api_name="redraw", concurrency_limit=4)

        clip_outputs = [state, clip_out, frame, plot, table, files, status]
        clip_btn.click(show_tab("clip-out"), None, output_tabs, api_visibility="private", queue=False).then(
            user_errors(clips.run_clip), [clip_in, threshold, max_hands, layers, device, smooth], clip_outputs,
            api_name="predict_clip", concurrency_limit=cfg.clip_concurrency, concurrency_id="clip",
            show_progress_on=[clip_out, status])
        frame.release(user_errors(clips.show_frame), [state, frame], [plot, table, status], api_name="clip_frame",
                      concurrency_limit=4)

        push_btn.click(user_errors(cb.push_labelstudio), [state, threshold, max_hands, ls_url, ls_key, ls_project], push_out,
                       api_name="push_labelstudio", concurrency_limit=2)
    return demo
