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

IMAGES_PER_PROCESS = 300  # "auto" starts N workers only for at least N x this many images to predict
# why (2-core VM, ge2019 images, `handos predict` end to end, runs alternated): the workers' start-up (spawn, import
# torch, load the model; both at once) took 1.3-1.5 s on idle cores (2.6-4 s while another job ran), ~1.1 s more
# than this process's own model load; then 2 workers predict ~90 images/s against ~75 for this one process (LiteRT
# on 2 threads, decode threads), so they pay off from ~500-600 images: 400 images took 7.1-7.4 s either way, 800
# images 11.4 s against 11.9 s at best
WORKER_MEMORY = 512 << 20  # bytes a worker may take (measured: ~350 MB resident, ~210 MB of it its own)


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory available to start programs (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def auto_processes(todo: int, cores: int | None = None, memory: int | None = None) -> int:
    """The number of worker processes "auto" means for `todo` images on the CPU: one per core (as many as the
    available memory holds) when there are enough images to pay for starting them, else 1 (no workers)."""
    cores = cpu_cores() if cores is None else cores
    memory = available_memory() if memory is None else memory
    if memory is not None:
        cores = min(cores, memory // WORKER_MEMORY)
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
