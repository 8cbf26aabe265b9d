"""Streaming batched inference over many images: a decode/prefetch pool feeds the model in batches."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from handos.errors import HandosError
from handos.io.images import LoadedImage, load_image
from handos.io.manifest import WorkItem
from handos.io.records import RecordWriter


@dataclass
class RunSummary:
    """What a run did."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    hands: int = 0
    seconds: float = 0.0  # the whole run, worker processes' start-up included
    errors: list[str] = field(default_factory=list)
    processes: int = 1  # model replicas (handos.batch.parallel); 1: this process
    startup_s: float = 0.0  # starting the worker processes (their imports and model loads)

    def add(self, file: str, outcome: dict | str, writer: RecordWriter) -> None:
        """Write one input's outcome (its record, or why it failed: a message) and count it."""
        if isinstance(outcome, str):
            writer.write_error(file, outcome)
            self.failed += 1
            self.errors.append(outcome)
            return
        writer.write(outcome)
        self.done += 1
        self.hands += len(outcome["hands"])

    @property
    def images_per_s(self) -> float:
        """Throughput of this run."""
        return self.done / self.seconds if self.seconds > 0 else 0.0


def decode(item: WorkItem) -> tuple[WorkItem, LoadedImage | None, str | None]:
    """Load one image and check its box prompts; failures come back as a message, never raised (the run goes on)."""
    try:
        image = load_image(item.path)
    except HandosError as err:
        return item, None, str(err)
    return item, image, None if item.boxes is None else box_error(item, image)


def decoded_stream(items: list[WorkItem], workers: int, prefetch: int) -> Iterator[tuple[WorkItem, LoadedImage | None, str | None]]:
    """Decode images in input order with `workers` threads and at most `prefetch` images ahead."""
    if workers <= 0:
        yield from map(decode, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handos-decode") as pool:
        window = []
        for item in items:
            window.append(pool.submit(decode, item))
            if len(window) >= prefetch:
                yield window.pop(0).result()
        for fut in window:
            yield fut.result()


def box_error(item: WorkItem, image: LoadedImage) -> str | None:
    """Why an item's box prompts cannot be used on its image (a box outside it), or None."""
    for k, (x1, y1, x2, y2) in enumerate(item.boxes or ()):
        if x2 <= 0 or y2 <= 0 or x1 >= image.width or y1 >= image.height:
            return f"{item.file}: boxes[{k}] = {[x1, y1, x2, y2]} lies outside the {image.width}x{image.height} image"
    return None


def predict_items(model, batch: list[tuple[WorkItem, LoadedImage]], include_vertices: bool = False) -> list[dict]:
    """Records of decoded items in one `records_batch` call (items with boxes: exactly those hands)."""
    prompts = [it.boxes for it, _ in batch]
    extra = {"boxes": [None if b is None else [list(x) for x in b] for b in prompts]} if any(
        b is not None for b in prompts) else {}  # box prompts: exactly those hands (HandOS.records_batch)
    return model.records_batch(
        [img for _, img in batch],
        cameras=[it.camera for it, _ in batch],
        files=[it.file for it, _ in batch],
        include_vertices=include_vertices,
        **extra,
    )


def run_images(
    model,
    items: list[WorkItem],
    writer: RecordWriter,
    batch_size: int = 8,
    workers: int = 2,
    include_vertices: bool = False,
    progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """Predict every item not already in `writer`, writing each record as soon as its batch is done."""
    summary = RunSummary()
    todo = [it for it in items if it.file not in writer.done]
    summary.skipped = len(items) - len(todo)
    start = time.perf_counter()
    batch: list[tuple[WorkItem, LoadedImage]] = []

    def flush() -> None:
        for (item, _), rec in zip(batch, predict_items(model, batch, include_vertices)):
            summary.add(item.file, rec, writer)
        if progress:
            progress(len(batch))
        batch.clear()

    for item, image, error in decoded_stream(todo, workers, prefetch=max(2 * batch_size, 4)):
        if error is not None:
            summary.add(item.file, error, writer)
            if progress:
                progress(1)
            continue
        batch.append((item, image))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    writer.close()
    summary.seconds = time.perf_counter() - start
    return summary
