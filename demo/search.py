"""Finding the hands of one image: the chosen recall mode first, and when it finds nothing, a harder look."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from demo.models import RETRY_RECALL, ModelCache
from handos.io.camera import Camera
from handos.io.images import LoadedImage
from handos.io.schema import Hand


@dataclass
class Attempt:
    """One model run: the recall mode, its time and how many hands it returned."""

    recall: str
    seconds: float
    found: int


@dataclass
class Found:
    """Every hand candidate of an image (unthresholded: the demo filters by its own threshold) and how it was found."""

    hands: list[Hand]
    attempts: list[Attempt] = field(default_factory=list)
    model: object = None

    @property
    def seconds(self) -> float:
        """Model time over all attempts."""
        return sum(a.seconds for a in self.attempts)

    @property
    def retried(self) -> bool:
        """Whether the first mode found nothing and a harder look followed."""
        return len(self.attempts) > 1

    def note(self) -> str:
        """The status-line account of a retry, else ''."""
        if not self.retried:
            return ""
        first, last = self.attempts[0], self.attempts[-1]
        outcome = f"found {last.found}" if last.found else "found none either"
        return (f"nothing with recall `{first.recall}` ({first.seconds:.2f} s), so it looked harder with recall "
                f"`{last.recall}`: {outcome} in {last.seconds:.2f} s")


def find_hands(cache: ModelCache, image: LoadedImage, camera: Camera, device: str, recall: str, max_hands: int,
               retry: str | None = RETRY_RECALL) -> Found:
    """All candidates (score threshold 0) with `recall`; when there are none, once more with `retry`.

    recall "off" means exactly MediaPipe's detector, so it is never followed by a harder look.
    """
    found = Found([])
    modes = [recall] + ([retry] if retry and recall not in ("off", retry) else [])
    for mode in modes:
        model = cache.get(device, mode)
        t0 = time.perf_counter()
        hands = list(model(image, camera=camera, max_hands=int(max_hands), score_threshold=0.0))
        found.attempts.append(Attempt(mode, time.perf_counter() - t0, len(hands)))
        found.hands, found.model = hands, model
        if hands:
            break
    return found


__all__ = ["Attempt", "Found", "find_hands"]
