"""Predictors for `handos eval` other than the full pipeline: the frozen foundation alone (MediaPipe port).

The foundation's 3D is MediaPipe's world landmarks: metric but hand-centred, so its hands are marked
`joints_3d_frame = "mediapipe_world"`; the report then scores PA-MPJPE and root-relative
MPJPE but no root depth.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from handos.io.schema import Hand

WORLD_FRAME = "mediapipe_world"


class FoundationPredictor:
    """`predict_batch(images, cameras)` over `handos.foundation.Foundation.detect` (cameras are not used)."""

    def __init__(self, device: str = "cpu", max_hands: int = 2, foundation: Any = None, recall: str = "fast",
                 runtime: str = "torch"):
        from handos.device import resolve_device

        if foundation is None:
            from handos.foundation import Foundation
            from handos.foundation.pipeline import FoundationConfig

            foundation = Foundation.load(resolve_device(device), config=FoundationConfig(recall_boost=recall),
                                         runtime=runtime)
        self.foundation = foundation
        self.max_hands = max_hands
        self.version = "foundation-only"

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray], cameras: Sequence[Any] | None = None) -> list[list[Hand]]:
        """One list of Hands per image, straight from the foundation's landmarks."""
        out = self.foundation.detect(list(images), max_hands=self.max_hands)
        return hands_from_foundation(out, len(images))


def hands_from_foundation(out: Any, num_images: int) -> list[list[Hand]]:
    """Split a FoundationOutput into per-image lists of Hand (2D px, world landmarks as hand-centred 3D)."""
    cpu = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    idx = cpu(out.image_index).astype(int)
    score, box, j2, world = cpu(out.score), cpu(out.box), cpu(out.joints_2d), cpu(out.world)
    right = cpu(out.handedness_right)
    presence = cpu(out.presence) if getattr(out, "presence", None) is not None else np.ones(len(idx))
    result: list[list[Hand]] = [[] for _ in range(num_images)]
    for k in range(len(idx)):
        is_right = bool(right[k] >= 0.5)
        hands = result[idx[k]]
        hands.append(
            Hand(
                id=len(hands),
                score=float(score[k]),
                handedness="right" if is_right else "left",
                handedness_score=float(right[k] if is_right else 1.0 - right[k]),
                bbox_xyxy=box[k],
                keypoints_2d=j2[k],
                keypoints_score=np.full(21, float(presence[k])),
                joints_3d=world[k] - world[k, :1],  # wrist at the origin
                cam_t=np.zeros(3),  # no absolute position from world landmarks (frame marked below)
                joints_3d_frame=WORLD_FRAME,
            )
        )
    return result
