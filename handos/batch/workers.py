"""Model replicas in worker processes for CPU batch prediction: each loads the model once, on one thread, then
decodes and predicts the jobs (lists of work items) it is sent and sends back one outcome per item.

Workers are spawned (not forked: torch's thread pools do not survive a fork), ignore Ctrl-C (the parent stops
them) and talk to the parent over one pipe each; a worker that dies (crash, OOM kill) is noticed through its
process sentinel, so the parent never waits on it forever.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from handos.errors import HandosError
from handos.io.manifest import WorkItem

Outcome = dict | str  # an item's record, or why it failed (a one-line message)


class WorkerError(HandosError):
    """A worker process died or failed unexpectedly (the run's records written so far are kept)."""


@dataclass(frozen=True)
class WorkerOptions:
    """What every worker loads and predicts with: the parent's handos.load options and the record options."""

    weights: str | None = None
    recall: str = "fast"
    runtime: str | None = None
    max_hands: int | None = None
    include_vertices: bool = False


def load_worker_model(options: WorkerOptions):
    """The model on the CPU with torch and LiteRT on one thread (LiteRT takes torch's thread count at load)."""
    import torch

    torch.set_num_threads(1)  # before handos.load: handos.foundation.runtime.default_threads reads it
    import handos

    model = handos.load(weights=options.weights, device="cpu", recall=options.recall, runtime=options.runtime)
    if options.max_hands is not None:
        model.max_hands = options.max_hands
    return model


def thread_report(model) -> dict[str, int]:
    """This process's threads: torch's intra-op count, each LiteRT net's XNNPACK count, and the OS threads."""
    import torch

    report = {"pid": os.getpid(), "torch_threads": torch.get_num_threads(),
              "os_threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else -1}
    for name in ("palm_net", "landmark_net"):  # LiteRT nets only (a torch net has no `graph.threads`)
        threads = getattr(getattr(getattr(model.foundation, name, None), "graph", None), "threads", None)
        if threads is not None:
            report[f"litert_{name}_threads"] = threads
    return report


def predict_job(model, items: list[WorkItem], include_vertices: bool) -> list[Outcome]:
    """Decode and predict one job's items in one batch; outcomes in item order (unreadable images: a message)."""
    from handos.batch.runner import decode, predict_items

    outcomes: list[Outcome] = []
    good = []
    for item, image, error in map(decode, items):
        outcomes.append(error if error is not None else len(good))
        if error is None:
            good.append((item, image))
    records = predict_items(model, good, include_vertices) if good else []
    return [records[o] if isinstance(o, int) else o for o in outcomes]


def serve(conn: Connection, options: WorkerOptions) -> None:
    """A worker's life: load the model, say ("ready", threads), then answer each job with ("done", outcomes) until
    None; a handos error (e.g. bad weights) goes back as ("failed", error), anything else as a WorkerError."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    try:
        model = load_worker_model(options)
        conn.send(("ready", thread_report(model)))
        while (job := conn.recv()) is not None:
            conn.send(("done", predict_job(model, job, options.include_vertices)))
    except HandosError as err:
        conn.send(("failed", err))
    except (EOFError, BrokenPipeError):
        pass  # the parent has gone: nothing to answer
    except Exception as err:  # a bug: one line for the parent to raise, not a traceback per worker
        conn.send(("failed", WorkerError(f"worker process {os.getpid()} failed: {type(err).__name__}: "
                                         f"{str(err).splitlines()[0] if str(err) else ''}"[:300])))
    else:
        conn.close()
        os._exit(0)  # all answered: skip the interpreter's teardown of torch & co (~0.3 s the parent would wait)


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ctrl-C ignored inside the block (main thread only): processes started in it inherit that from their first
    instant, before `serve` could say so itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def death_note(proc: mp.process.BaseProcess) -> str:
    """How a worker process ended, in words."""
    proc.join(timeout=1)
    code = proc.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exited with code {code}"


class WorkerPool:
    """`processes` spawned workers with their own model each; `run` streams jobs through them.

    Use as a context manager: leaving it normally lets the workers finish, leaving it on an error (a dead
    worker, Ctrl-C) terminates them.
    """

    def __init__(self, processes: int, options: WorkerOptions, ahead: int = 2) -> None:
        """Start the workers and wait until each has loaded its model (raises what a failed load raised)."""
        ctx = mp.get_context("spawn")
        self.ahead = ahead  # jobs each worker holds, so that it never waits for the next
        self.procs: list[mp.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.threads: list[dict[str, int]] = []  # each worker's thread_report
        try:
            for k in range(processes):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=serve, args=(theirs, options), name=f"handos-worker-{k}", daemon=True)
                with sigint_ignored():
                    proc.start()
                theirs.close()
                self.procs.append(proc)
                self.conns.append(mine)
            for k in range(processes):
                self.threads.append(self.receive(k, "loading the model"))
        except BaseException:
            self.terminate()
            raise

    def receive(self, k: int, doing: str) -> object:
        """Worker k's next answer, or the WorkerError / handos error that says why none will come."""
        conn, proc = self.conns[k], self.procs[k]
        wait([conn, proc.sentinel])
        try:
            kind, payload = conn.recv() if conn.poll() else ("died", None)
        except (EOFError, ConnectionResetError):
            kind, payload = "died", None
        if kind == "died":
            raise WorkerError(f"worker process {proc.pid} {death_note(proc)} while {doing}")
        if kind == "failed":
            raise payload
        return payload

    def run(self, jobs: list[list[WorkItem]]) -> Iterator[tuple[int, list[Outcome]]]:
        """(job index, outcomes) for every job, in the order they finish."""
        todo = iter(enumerate(jobs))
        held: list[deque[int]] = [deque() for _ in self.procs]  # job indices each worker holds, in order sent

        def feed(k: int) -> None:
            nxt = next(todo, None)
            if nxt is not None:
                self.conns[k].send(nxt[1])
                held[k].append(nxt[0])

        for _ in range(self.ahead):
            for k in range(len(self.procs)):
                feed(k)
        while any(held):
            busy = [k for k in range(len(self.procs)) if held[k]]
            ready = wait([self.conns[k] for k in busy] + [self.procs[k].sentinel for k in busy])
            for k in busy:
                if self.conns[k] in ready or self.procs[k].sentinel in ready:
                    first = jobs[held[k][0]][0].file
                    outcomes = self.receive(k, f"predicting a batch of {len(jobs[held[k][0]])} from {first}")
                    yield held[k].popleft(), outcomes
                    feed(k)

    def close(self) -> None:
        """Let the workers finish (each gets None) and wait for them; stragglers are terminated."""
        for conn in self.conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=10)
        self.terminate()

    def terminate(self) -> None:
        """Stop every worker now (SIGTERM, then SIGKILL for one that lingers)."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        self.conns, self.procs = [], []

    def __enter__(self) -> WorkerPool:
        """The pool itself (started already)."""
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Close on success; terminate on an error or Ctrl-C."""
        if exc_type is None:
            self.close()
        else:
            self.terminate()
