"""The Gradio demo: `build_demo()` makes the Blocks app; `app.py` launches it."""
from __future__ import annotations

__all__ = ["build_demo"]


def build_demo(*args, **kwargs):
    """Build the Gradio Blocks app (see demo.layout.build_demo)."""
    from demo.layout import build_demo as _build

    return _build(*args, **kwargs)
