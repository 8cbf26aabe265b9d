"""Label Studio pre-annotation for handos: labeling config, converters, push, ML backend, export.

>>> from annotate.push import push_records          # records + images -> pre-annotated tasks
>>> from annotate.convert import export_to_coco     # Label Studio JSON export -> training file
`python -m handos label ...` pushes from the command line; `python -m annotate.backend` serves predictions.
"""
from __future__ import annotations

__all__ = ["push_records", "PushResult", "label_config", "export_to_coco", "export_to_eval"]


def __getattr__(name: str):
    """Import lazily: the SDK is only needed once something talks to Label Studio."""
    if name in ("push_records", "PushResult"):
        from annotate import push

        return getattr(push, name)
    if name in ("label_config", "export_to_coco", "export_to_eval"):
        from annotate import convert

        return getattr(convert, name)
    raise AttributeError(name)
