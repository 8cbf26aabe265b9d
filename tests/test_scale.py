"""Pre-labeling at scale: the streaming CLI path and Ray Data agree, lose nothing, and resume."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from handos.__main__ import main as cli
from handos.batch.runner import run_images
from handos.io.manifest import expand_inputs
from handos.io.records import RecordWriter, read_records


@pytest.fixture(scope="module")
def image_set(tmp_path_factory, realdata):
    """A few hundred images: real hands (ge2019 dev images) plus generated hand-free noise images."""
    root = tmp_path_factory.mktemp("scale")
    real = sorted((realdata / "ge2019_realworld" / "images").glob("*.jpg"))[:40]
    for p in real:
        shutil.copy(p, root / p.name)
    rng = np.random.default_rng(0)
    for i in range(160):
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(root / f"noise_{i:03d}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def by_file(path):
    """Records keyed by file, with the model-version-independent parts."""
    return {r["file"]: r for r in read_records(path)}


@pytest.mark.slow
def test_single_process_is_resumable(model, image_set, tmp_path):
    items = expand_inputs([str(image_set)])
    out = tmp_path / "preds.jsonl"
    writer = RecordWriter(str(out))
    broken_first = any(it.path.endswith("broken.jpg") for it in items[:70])
    first = run_images(model, items[:70], writer, batch_size=8, workers=2)
    assert first.done == 70 - broken_first and first.failed == broken_first
    writer = RecordWriter(str(out))  # "interrupted" after 70: the rerun does the rest, retrying failures
    second = run_images(model, items, writer, batch_size=8, workers=2)
    assert second.skipped == 70 - broken_first and second.failed == 1
    assert second.done == len(items) - second.skipped - 1
    files = [r["file"] for r in read_records(out)]
    assert len(files) == len(set(files)) == len(items) - 1
    errors = [json.loads(line) for line in open(str(out) + ".errors.jsonl")]
    assert {e["file"] for e in errors} == {str(image_set / "broken.jpg")}
    hands = sum(len(r["hands"]) for r in read_records(out))
    assert hands >= 38  # the 40 real hand images


def test_decode_pool_does_not_change_results(model, image_set, tmp_path):
    items = expand_inputs([str(image_set)])[:24]
    for workers in (0, 3):
        run_images(model, items, RecordWriter(str(tmp_path / f"w{workers}.jsonl")), batch_size=5, workers=workers)
    a, b = by_file(tmp_path / "w0.jsonl"), by_file(tmp_path / "w3.jsonl")
    assert a == b


@pytest.mark.slow
def test_cli_sharded_output(model, image_set, tmp_path):
    out = tmp_path / "shards"
    rc = cli(["predict", str(image_set), "--out", str(out), "--shard-size", "50", "--device", "cpu", "--quiet"])
    assert rc == 1  # one broken file, reported
    assert len(list(out.glob("preds-*.jsonl"))) == 4
    assert len(by_file(out)) == 200


@pytest.mark.slow
def test_ray_matches_single_process(model, image_set, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is the optional extra handos[ray]; pip install 'handos[ray]'")
    from handos.batch.ray import run_ray

    items = expand_inputs([str(image_set)])
    run_images(model, items, RecordWriter(str(tmp_path / "single.jsonl")), batch_size=8, workers=2)
    try:
        half = run_ray(items[:100], str(tmp_path / "ray.jsonl"), num_actors=2, batch_size=8, num_cpus=2)
        assert half.done + half.failed == 100
        rest = run_ray(items, str(tmp_path / "ray.jsonl"), num_actors=2, batch_size=8, num_cpus=2)
    finally:
        ray.shutdown()
    assert rest.skipped == half.done  # failures of the first run are retried
    single, distributed = by_file(tmp_path / "single.jsonl"), by_file(tmp_path / "ray.jsonl")
    files = [r["file"] for r in read_records(tmp_path / "ray.jsonl")]
    assert len(files) == len(set(files)) == len(items) - 1
    assert single.keys() == distributed.keys()
    for f in single:
        assert len(single[f]["hands"]) == len(distributed[f]["hands"]), f
        for h1, h2 in zip(single[f]["hands"], distributed[f]["hands"]):
            assert np.allclose(h1["keypoints_2d"], h2["keypoints_2d"], atol=0.05)
            assert np.allclose(h1["joints_3d"], h2["joints_3d"], atol=1e-4)
