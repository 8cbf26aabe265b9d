"""Pre-labeling beyond one machine: Ray Data with model replicas as actors (optional extra `handos[ray]`)."""
from __future__ import annotations

import json
import time

import numpy as np

from handos.batch.runner import RunSummary
from handos.errors import HandosError, InputError
from handos.io.manifest import WorkItem
from handos.io.records import RecordWriter


class RayPredictor:
    """A model replica for `map_batches`: loads the weights once, predicts batches of image paths."""

    def __init__(self, weights: str | None, device: str, include_vertices: bool, recall: str = "fast",
                 runtime: str | None = None) -> None:
        """Load the model once per actor."""
        import torch

        import handos

        torch.set_num_threads(1)
        self.model = handos.load(weights=weights, device=device, recall=recall, runtime=runtime)
        self.include_vertices = include_vertices

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """{path, file, camera(json)} columns -> {file, record(json), error} columns."""
        from handos.io.images import load_image

        rows: list[tuple[str, str, str]] = []  # (file, record json, error)
        good, cams, names = [], [], []
        for path, file, camera in zip(batch["path"], batch["file"], batch["camera"]):
            try:
                good.append(load_image(str(path)))
                cams.append(json.loads(camera) if camera else None)
                names.append(str(file))
            except HandosError as err:
                rows.append((str(file), "", str(err)))
        if good:
            for name, rec in zip(names, self.model.records_batch(good, cameras=cams, files=names, include_vertices=self.include_vertices)):
                rows.append((name, json.dumps(rec, separators=(",", ":")), ""))
        files, records, errors = (list(col) for col in zip(*rows)) if rows else ([], [], [])
        return {"file": files, "record": records, "error": errors}


def run_ray(
    items: list[WorkItem],
    out: str,
    weights: str | None = None,
    address: str | None = None,
    num_actors: int = 2,
    batch_size: int = 8,
    gpus_per_actor: float = 0.0,
    fmt: str = "jsonl",
    include_vertices: bool = False,
    recall: str = "fast",
    runtime: str | None = None,
    num_cpus: int | None = None,
) -> RunSummary:
    """Predict `items` on a Ray cluster (or a local one), streaming records into `out` as they finish (resumable)."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'handos[ray]'") from None
    writer = RecordWriter(out, fmt=fmt, resume=True)
    todo = [it for it in items if it.file not in writer.done]
    summary = RunSummary(skipped=len(items) - len(todo))
    start = time.perf_counter()
    if not todo:
        writer.close()
        return summary
    if not ray.is_initialized():
        try:
            ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                     log_to_driver=False, ignore_reinit_error=True)
        except ConnectionError as err:
            raise InputError(f"cannot reach the Ray cluster at {address}: {err}") from None
    device = "cuda" if gpus_per_actor > 0 else "cpu"
    rows = [{"path": it.path, "file": it.file, "camera": json.dumps(it.camera) if it.camera else ""} for it in todo]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 4 * num_actors)))
    ds = ds.map_batches(
        RayPredictor,
        fn_constructor_kwargs={"weights": weights, "device": device, "include_vertices": include_vertices,
                               "recall": recall, "runtime": runtime},
        batch_size=batch_size,
        concurrency=num_actors,
        num_gpus=gpus_per_actor,
        num_cpus=1,
        batch_format="numpy",
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for file, record, error in zip(batch["file"], batch["record"], batch["error"]):
            if error:
                writer.write_error(str(file), str(error))
                summary.failed += 1
                summary.errors.append(str(error))
            else:
                rec = json.loads(record)
                writer.write(rec)
                summary.done += 1
                summary.hands += len(rec["hands"])
    writer.close()
    summary.seconds = time.perf_counter() - start
    return summary
