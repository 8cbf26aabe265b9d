"""Input components that hand the raw upload to handos' own loader (its validation and one-line errors)."""
from __future__ import annotations

import base64
import binascii

import gradio as gr

from demo.export import new_workdir


def upload_path(payload) -> str | None:
    """The uploaded file's path, unopened (webcam data URLs are written to a file first)."""
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):
        try:
            header, data = payload.url.split(",", 1)
            raw = base64.b64decode(data, validate=False)
        except (ValueError, binascii.Error):
            raise gr.Error("the webcam snapshot could not be decoded; take it again", print_exception=False) from None
        ext = "png" if "png" in header else "jpg" if "jpeg" in header else "webp"
        path = new_workdir("webcam") / f"webcam.{ext}"
        path.write_bytes(raw)
        return str(path)
    if payload.path is None:
        raise gr.Error("no image was received; upload it again", print_exception=False)
    return str(payload.path)


def image_input(**kwargs) -> gr.Image:
    """gr.Image (upload, webcam, clipboard) whose value is the uploaded file's path, not opened by Gradio.

    Gradio's own preprocessing opens the file with PIL and fails with a bare error on a broken
    upload; here handos.io.images.load_image does the validation and says what was wrong. (An
    instance override rather than a subclass: Gradio writes a .pyi next to every component subclass.)
    """
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    component.preprocess = upload_path  # type: ignore[method-assign]
    return component
