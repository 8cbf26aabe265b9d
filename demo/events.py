"""What each output shows after a failed browser event: stale results cleared, the message kept in view."""
from __future__ import annotations

import json

import gradio as gr

from demo.errors import error_status, panel_error
from demo.figures import EMPTY_BEFORE_RUN, hands_figure


def image_failed(message: str, err: BaseException) -> tuple:
    """(state, annotated, plot, table, downloads, status, crops) after a failed image run: stale results cleared.

    (The browser clears a broken input preview itself: see demo.layout.CLEAR_BROKEN_PREVIEW_JS.)
    """
    return None, None, hands_figure([], None, empty_text=EMPTY_BEFORE_RUN), [], None, error_status(message), []


def rerun_failed(message: str, err: BaseException) -> tuple:
    """(state, annotated, plot, table, downloads, status, crops, clip video) after a failed rerun."""
    return (*image_failed(message, err), gr.skip())


def redraw_failed(message: str, err: BaseException) -> tuple:
    """(annotated, plot, table, downloads, status, crops, clip video) after a failed redraw: only the message."""
    return (gr.skip(),) * 4 + (error_status(message),) + (gr.skip(),) * 2


def clip_failed(message: str, err: BaseException) -> tuple:
    """(state, clip video, frame slider, plot, table, downloads, status, seek times) after a failed clip run."""
    slider = gr.Slider(minimum=0, maximum=1, value=0, step=1, interactive=False, label="Frame (after a clip run)")
    return (None, None, slider, hands_figure([], None, empty_text=EMPTY_BEFORE_RUN), [], None, error_status(message),
            json.dumps([]))


def frame_failed(message: str, err: BaseException) -> tuple:
    """(plot, table) after a failed frame pick: the 3D view says what went wrong."""
    return hands_figure([], None, empty_text=f"error: {message}"), gr.skip()


def push_failed(message: str, err: BaseException) -> str:
    """The Label Studio panel's message after a failed push."""
    return panel_error(message)


__all__ = ["clip_failed", "frame_failed", "image_failed", "push_failed", "redraw_failed", "rerun_failed"]
