"""`handos predict --processes N`: worker processes give the single-process records, in order, resumable; a dead
worker or Ctrl-C stops the run cleanly with what was done kept; the option is refused where it does not apply."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal

import numpy as np
import pytest

from handos.__main__ import main as cli
from handos.batch.parallel import auto_processes, plan_jobs, run_images_parallel, run_in_processes
from handos.batch.runner import run_images
from handos.batch.workers import WorkerError, WorkerOptions, WorkerPool
from handos.io.manifest import WorkItem, expand_inputs
from handos.io.records import RecordWriter, read_records


@pytest.fixture(scope="module")
def items(tmp_path_factory, realdata):
    """15 real ge2019 images, then one of them again with a box prompt (its GT hand) under another name."""
    root = tmp_path_factory.mktemp("parallel")
    ge = realdata / "ge2019_realworld"
    for p in sorted((ge / "images").glob("*.jpg"))[:15]:
        shutil.copy(p, root / p.name)
    found = expand_inputs([str(root)])
    first = json.loads((ge / "derived_annotations.json").read_text())["images"][0]
    j = np.asarray(first["hands"][0]["joints_2d"], float)
    box = (*j.min(0).tolist(), *j.max(0).tolist())
    return found + [WorkItem(str(ge / first["file"]), "boxed.jpg", None, (box,))]


@pytest.fixture(scope="module")
def pool():
    """Two workers with the default model, started once for the module."""
    with WorkerPool(2, WorkerOptions()) as workers:
        yield workers


def records(path) -> list[dict]:
    """The records of an output, in file order."""
    return list(read_records(path))


def new_workers(before: set[int]) -> list[mp.process.BaseProcess]:
    """Worker processes alive now that were not in `before` (pids; the module's pool is)."""
    return [c for c in mp.active_children() if c.name.startswith("handos-worker") and c.pid not in before]


def pids() -> set[int]:
    """The pids of this process's children now."""
    return {c.pid for c in mp.active_children()}


def test_job_plan_keeps_batches_and_splits_the_last_round():
    assert plan_jobs(32, 8, 2) == [(0, 8), (8, 16), (16, 24), (24, 32)]
    assert plan_jobs(50, 16, 2) == [(0, 16), (16, 32), (32, 41), (41, 50)]  # not 16, 16, 16, 2
    assert plan_jobs(3, 8, 2) == [(0, 1), (1, 3)] and plan_jobs(0, 8, 2) == []
    for n, b, w in [(1, 8, 2), (17, 8, 2), (1001, 16, 3), (7, 1, 4)]:
        jobs = plan_jobs(n, b, w)
        assert jobs[0][0] == 0 and jobs[-1][1] == n and all(a < c <= a + b for a, c in jobs)
        assert all(x[1] == y[0] for x, y in zip(jobs, jobs[1:]))


def test_auto_is_one_process_per_core_for_enough_images():
    gb = 1 << 30
    assert auto_processes(10_000, cores=2, memory=8 * gb) == 2 and auto_processes(10_000, cores=1, memory=8 * gb) == 1
    assert auto_processes(100, cores=2, memory=8 * gb) == 1  # starting workers costs more than they give
    assert auto_processes(0, cores=8, memory=8 * gb) == 1
    assert auto_processes(100_000, cores=64, memory=2 * gb) == 4  # no more workers than the memory holds


def test_workers_run_on_one_thread(pool):
    for report in pool.threads:
        assert report["torch_threads"] == 1
        assert report["litert_palm_net_threads"] == report["litert_landmark_net_threads"] == 1
        assert report["os_threads"] <= 2  # no XNNPACK pool (torch keeps one idle helper)


def test_processes_give_the_single_process_records_in_order(model, pool, items, tmp_path):
    run_images(model, items, RecordWriter(str(tmp_path / "one.jsonl")), batch_size=4, workers=0)
    summary = run_images_parallel(pool, items, RecordWriter(str(tmp_path / "two.jsonl")), batch_size=4)
    assert summary.done == 16 and summary.failed == 0 and summary.processes == 2
    one, two = records(tmp_path / "one.jsonl"), records(tmp_path / "two.jsonl")
    assert [r["file"] for r in two] == [it.file for it in items]  # input order
    assert two == one  # same hands, same numbers
    assert len(two[-1]["hands"]) == 1 and summary.hands == sum(len(r["hands"]) for r in one)


def test_processes_resume_and_report_unreadable_images_and_bad_boxes(pool, items, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    outside = WorkItem(items[0].path, "outside.jpg", None, ((5000.0, 5000.0, 5100.0, 5100.0),))
    todo = items[:5] + [WorkItem(str(tmp_path / "broken.jpg"), "broken.jpg"), outside] + items[5:]
    out = tmp_path / "p.jsonl"
    first = run_images_parallel(pool, todo[:9], RecordWriter(str(out)), batch_size=4)
    assert (first.done, first.failed) == (7, 2)
    assert any("outside the" in e for e in first.errors)
    second = run_images_parallel(pool, todo, RecordWriter(str(out)), batch_size=4)  # the rerun: failures retried
    assert (second.skipped, second.done, second.failed) == (7, 9, 2)
    files = [r["file"] for r in records(out)]
    assert files == [it.file for it in todo if it.file not in ("broken.jpg", "outside.jpg")]
    errors = [json.loads(line)["file"] for line in open(str(out) + ".errors.jsonl")]
    assert errors == ["broken.jpg", "outside.jpg"] * 2


def test_a_dead_worker_is_a_clean_error_and_the_rerun_resumes(model, items, tmp_path):
    out = tmp_path / "p.jsonl"
    before = pids()

    def kill_a_worker(n: int) -> None:
        for child in new_workers(before):
            os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(WorkerError) as caught:
        run_in_processes(items, RecordWriter(str(out)), 1, WorkerOptions(), batch_size=4, progress=kill_a_worker)
    message = str(caught.value)
    assert "SIGKILL" in message and "run the same command again" in message and "\n" not in message
    kept = len(records(out))
    assert kept in (4, 8)  # the batch done before the kill (and the next, had it just been sent back)
    assert not new_workers(before)
    rest = run_images(model, items, RecordWriter(str(out)), batch_size=4, workers=0)
    assert (rest.skipped, rest.done) == (kept, 16 - kept)


def test_ctrl_c_stops_the_workers_and_keeps_what_was_done(items, tmp_path):
    out = tmp_path / "p.jsonl"
    before = pids()

    def interrupt(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_in_processes(items, RecordWriter(str(out)), 1, WorkerOptions(), batch_size=4, progress=interrupt)
    assert len(records(out)) == 4
    assert not new_workers(before)


def test_a_failed_model_load_in_the_workers_is_the_load_error(items, tmp_path):
    from handos.errors import HandosError

    before = pids()
    with pytest.raises(HandosError, match="nowhere") as caught:
        run_in_processes(items, RecordWriter(str(tmp_path / "p.jsonl")), 2,
                         WorkerOptions(weights=str(tmp_path / "nowhere.safetensors")))
    assert not isinstance(caught.value, WorkerError)  # the same error as a load in this process
    assert not new_workers(before)


def test_cli_with_processes(items, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for it in items[:6]:
        shutil.copy(it.path, tmp_path / "in" / os.path.basename(it.path))
    (tmp_path / "in" / "zz_broken.jpg").write_bytes(b"nope")
    out = tmp_path / "p.jsonl"
    assert cli(["predict", str(tmp_path / "in"), "--out", str(out), "--processes", "2", "--batch-size", "2",
                "--device", "cpu", "--quiet"]) == 1  # the broken image, listed
    err = capsys.readouterr().err
    assert "6 images" in err and "1 failed" in err and "2 processes" in err
    assert [r["file"] for r in records(out)] == [str(tmp_path / "in" / os.path.basename(it.path)) for it in items[:6]]
    assert cli(["predict", str(tmp_path / "in"), "--out", str(out), "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err  # the rerun: one image to retry, so "auto" is this process alone
    assert "6 already done" in err and "processes," not in err


@pytest.mark.parametrize("extra, fragment", [
    (["--processes", "2", "--ray"], "not to --ray"),
    (["--processes", "0"], "whole number >= 1"),
    (["--processes", "two"], "whole number >= 1"),
])
def test_processes_refused_where_they_do_not_apply(tmp_path, capsys, extra, fragment):
    (tmp_path / "a.png").write_bytes(b"")
    assert cli(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "p.jsonl"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_processes_refused_on_cuda_and_for_clips(tmp_path, capsys, monkeypatch):
    import torch

    import handos.device

    (tmp_path / "a.png").write_bytes(b"")
    monkeypatch.setattr(handos.device, "resolve_device", lambda device: torch.device("cuda"))
    assert cli(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "p.jsonl"), "--processes", "2",
                "--device", "cuda"]) == 2
    assert "runs CPU workers" in capsys.readouterr().err
    (tmp_path / "c.mp4").write_bytes(b"")
    assert cli(["predict", str(tmp_path / "c.mp4"), "--out", str(tmp_path / "p.jsonl"), "--processes", "2"]) == 2
    assert "not to clips" in capsys.readouterr().err
