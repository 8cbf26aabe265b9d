"""`handos predict` on every CPU core: the runner's batches spread over worker processes (handos.batch.workers),
one model on one thread in each, records written by this process in input order."""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from handos.batch.runner import RunSummary
from handos.batch.workers import Outcome, WorkerError, WorkerOptions, WorkerPool
from handos.io.manifest import WorkItem
from handos.io.records import RecordWriter

IMAGES_PER_PROCESS = 50  # "auto" starts N processes only for at least N x this many images to predict
# why: each worker's start-up (spawn, import torch, load the model) took 1.1-1.6 s with both starting at once on
# the 2-core VM, which one process predicting on both cores (~60 images/s) spends on ~50-80 images


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def auto_processes(todo: int, cores: int | None = None) -> int:
    """The number of worker processes "auto" means for `todo` images on the CPU: one per core when there are
    enough images to pay for starting them (IMAGES_PER_PROCESS each), else 1 (this process, no workers)."""
    cores = cpu_cores() if cores is None else cores
    return cores if cores > 1 and todo >= IMAGES_PER_PROCESS * cores else 1


def plan_jobs(n: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """[start, stop) item ranges: batches of `batch_size` (the single-process runner's batches, so the same
    records), but the last round, shorter than one batch per worker, split evenly so the workers end together."""
    full = n - n % (batch_size * workers)
    bounds = list(range(0, full, batch_size)) + [full]
    tail = n - full
    pieces = min(workers, tail)
    for k in range(1, pieces + 1):
        bounds.append(full + (tail * k) // pieces)
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def run_images_parallel(
    pool: WorkerPool,
    items: list[WorkItem],
    writer: RecordWriter,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """Predict every item not already in `writer` on the pool's workers; records are written in input order (a
    reorder buffer holds the few batches that finish early). On a dead worker or Ctrl-C, every finished batch is
    written before the error goes up, so rerunning the same command resumes."""
    summary = RunSummary(processes=len(pool.procs))
    todo = [it for it in items if it.file not in writer.done]
    summary.skipped = len(items) - len(todo)
    start = time.perf_counter()
    jobs = [todo[a:b] for a, b in plan_jobs(len(todo), batch_size, len(pool.procs))]
    finished: dict[int, list[Outcome]] = {}
    written = 0

    def write(index: int) -> None:
        for item, outcome in zip(jobs[index], finished.pop(index)):
            summary.add(item.file, outcome, writer)

    try:
        for index, outcomes in pool.run(jobs):
            finished[index] = outcomes
            if progress:
                progress(len(outcomes))
            while written in finished:
                write(written)
                written += 1
    finally:
        for index in sorted(finished):  # only after a failure: batches that finished before an unfinished one
            write(index)
        writer.close()
        summary.seconds = time.perf_counter() - start
    return summary


def run_in_processes(
    items: list[WorkItem],
    writer: RecordWriter,
    processes: int,
    options: WorkerOptions,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """Start `processes` workers, predict the items not yet in `writer` on them, stop them; the summary's
    seconds include the start-up (also given alone as startup_s)."""
    if all(it.file in writer.done for it in items):
        writer.close()
        return RunSummary(skipped=len(items))
    start = time.perf_counter()
    try:
        with WorkerPool(processes, options) as pool:
            startup = time.perf_counter() - start
            summary = run_images_parallel(pool, items, writer, batch_size=batch_size, progress=progress)
    except WorkerError as err:
        raise WorkerError(f"{err}; the {len(writer.done)} records in {writer.out} are kept: run the same command "
                          "again to resume") from None
    finally:
        writer.close()
    summary.startup_s = startup
    summary.seconds = time.perf_counter() - start
    return summary
