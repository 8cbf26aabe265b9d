"""The labeling view in a real browser (Debian chromium driven by Playwright) against a real Label Studio.

What an annotator does with handos pre-labels: drag one joint, flag one joint occluded, submit, export
(the `handos label --export` path) and find exactly that change; and draw a box with the smart tool
around a hand the model missed, answered by the ML backend (`python -m annotate.backend`) with its 21
joints. Screenshots go to tests/artifacts/; docs_labeling.png, a task made from one of the demo's own example renders
(never a real photo: the real sets' licences are research-only), is what tools/docs_pictures.py makes docs/labeling.jpg
from.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from labelstudio_server import free_port

from annotate import push

pytestmark = [pytest.mark.browser, pytest.mark.labelstudio]
REPO = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1600, "height": 1000}
DRAG_SCREEN_PX = (36.0, 18.0)  # the joint drag, in screen (CSS) pixels
GE_DRAG, GE_SMART = "00002", "00005"  # ge2019 real-world photos (256 x 256, one hand each)
DOCS_EXAMPLE = REPO / "demo" / "examples" / "open_palm_wall.jpg"  # rendered by tools/make_examples.py


@pytest.fixture(scope="session")
def ge2019(realdata) -> dict[str, dict]:
    """ge2019 dev images by stem -> their ground-truth entry (file made absolute)."""
    root = realdata / "ge2019_realworld"
    ann = json.loads((root / "derived_annotations.json").read_text())
    return {Path(im["file"]).stem: {**im, "path": str(root / im["file"])} for im in ann["images"]}


@pytest.fixture(scope="session")
def drag_record(label_studio_boot, model, ge2019) -> dict:
    """The real model's record for the drag test's photo (computed while the server boots)."""
    path = ge2019[GE_DRAG]["path"]
    rec = model.record(path, file=path)
    assert len(rec["hands"]) == 1, "the model should find the one hand of this ge2019 photo"
    return rec


@pytest.fixture(scope="session")
def browser(chromium, label_studio):
    """The session's chromium (conftest), once Label Studio is up."""
    return chromium


@pytest.fixture
def page(browser, label_studio):
    """A fresh 1600 x 1000 browser tab logged in to Label Studio as the test user."""
    from labelstudio_server import USERNAME

    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(label_studio.url + "/user/login/", wait_until="load", timeout=60_000)
    pg.fill("input[name=email]", USERNAME)
    pg.fill("input[name=password]", label_studio.password)
    pg.click("button[type=submit]")
    pg.wait_for_url(lambda u: "/user/login" not in u, timeout=60_000)
    pg.page_errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()


def open_task(pg, url: str, project_id: int, task_id: int, n_regions: int) -> None:
    """Open a task's labeling view and wait until the image and `n_regions` regions are drawn."""
    pg.goto(f"{url}/projects/{project_id}/data?task={task_id}", wait_until="load", timeout=60_000)
    pg.wait_for_function("() => { const i = document.querySelector('img[alt=image]'); return i && i.naturalWidth > 0; }",
                         timeout=60_000)
    pg.wait_for_function(f"() => window.Htx && window.Htx.annotationStore.selected && "
                         f"window.Htx.annotationStore.selected.regions.length >= {n_regions}", timeout=60_000)
    pg.wait_for_timeout(500)  # the canvas settles (fit to the column)


def image_to_screen(pg, width: int):
    """A function image px (u, v) -> page (x, y), and the image's screen scale (CSS px per image px)."""
    x, y, w = pg.evaluate("() => { const b = document.querySelector('img[alt=image]').getBoundingClientRect();"
                          " return [b.x, b.y, b.width]; }")
    s = w / width
    return (lambda u, v: (x + u * s, y + v * s)), s


def regions(pg) -> list[dict]:
    """The regions of the annotation open in the view (type, id, parent id), read from Label Studio's store."""
    return pg.evaluate("() => window.Htx.annotationStore.selected.regions.map(r => "
                       "({type: r.type, id: r.cleanId || r.id, parent: r.parentID || null}))")


def submit_and_wait(pg, client, task_id: int, timeout: float = 60.0) -> dict:
    """Press Submit and wait until the task has a submitted annotation; returns it."""
    pg.get_by_role("button", name="Submit current annotation").click()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        anns = [a if isinstance(a, dict) else a.model_dump() for a in client.tasks.get(id=str(task_id)).annotations or []]
        done = [a for a in anns if not a.get("was_cancelled")]
        if done:
            return done[-1]
        time.sleep(0.5)
    raise AssertionError(f"no annotation on task {task_id} {timeout:.0f} s after Submit")


def export_project(label_studio, project_id: int, out: Path, monkeypatch) -> dict:
    """`handos label --export OUT --project ID` as a user runs it (same process); returns the COCO file."""
    from handos.__main__ import main

    for k in list(os.environ):
        if k.startswith("LABEL_STUDIO_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    rc = main(["label", "--export", str(out), "--ls-url", label_studio.url, "--project", str(project_id)])
    assert rc == 0
    return json.loads(out.read_text())


def spread_joints(kps: np.ndarray, inside: np.ndarray, k: int = 2) -> list[int]:
    """The k joints farthest from their nearest neighbour (easy to hit with the mouse), best first."""
    d = np.linalg.norm(kps[:, None] - kps[None], axis=-1) + np.eye(len(kps)) * 1e9  # (21, 21)
    clearance = np.where(inside, d.min(1), -1.0)
    return [int(j) for j in np.argsort(-clearance)[:k]]


def test_drag_one_joint_flag_one_joint_submit_export(page, label_studio, drag_record, ge2019, artifacts, tmp_path,
                                                      monkeypatch):
    t0 = time.perf_counter()
    rec = drag_record
    res = push.push_records([rec], [rec["file"]], label_studio.url, label_studio.token, "browser drag", create=True)
    pid, tid = res.project_id, res.task_ids[0]
    client = push.connect(label_studio.url, label_studio.token)
    hand = rec["hands"][0]
    W, H = rec["width"], rec["height"]
    kps = np.asarray(hand["keypoints_2d"], dtype=np.float64)  # (21, 2) px
    inside = (kps[:, 0] >= 0) & (kps[:, 0] <= W) & (kps[:, 1] >= 0) & (kps[:, 1] <= H)
    n_regions = 1 + int(inside.sum())
    open_task(page, label_studio.url, pid, tid, n_regions)
    t_open = time.perf_counter() - t0
    # joints come before their box (so they are on top), tied to it by parentID: the Regions panel nests them
    got = regions(page)
    assert [r["type"] for r in got] == ["keypointregion"] * (n_regions - 1) + ["rectangleregion"]
    assert all(r["parent"] == "h0" for r in got[:-1])
    to_screen, s = image_to_screen(page, W)

    # the hand selected: its panel is in view without scrolling at 1600 x 1000
    page.locator(".lsf-tree__node_type_rectangleregion .lsf-outliner-item__title").first.click()
    flags_header = page.get_by_text("Selected hand", exact=True)
    flags_header.wait_for(state="visible", timeout=10_000)
    box = flags_header.bounding_box()
    assert box is not None and box["y"] + box["height"] < VIEWPORT["height"], "the per-hand panel needs scrolling"
    page.screenshot(path=str(artifacts / "labeling.png"))
    page.keyboard.press("Escape")  # unselect
    flags_header.wait_for(state="hidden", timeout=10_000)

    # drag one joint: press on it (it is on top of the box), move, release
    a, b = spread_joints(kps, inside)
    ax, ay = to_screen(*kps[a])
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move(ax + DRAG_SCREEN_PX[0], ay + DRAG_SCREEN_PX[1], steps=8)
    page.mouse.up()
    page.wait_for_timeout(300)
    # flag another joint occluded: click it, tick the box in the "Selected joint" panel
    bx, by = to_screen(*kps[b])
    page.mouse.click(bx, by)
    page.get_by_text("Selected joint", exact=True).wait_for(state="visible", timeout=10_000)
    assert not page.get_by_text("Selected hand", exact=True).is_visible()  # the click selected the joint, not the box
    page.locator("label.lsf-choice__checkbox:visible", has_text="occluded").click()
    page.wait_for_timeout(300)
    submit_and_wait(page, client, tid)
    t_labelled = time.perf_counter() - t0

    coco = export_project(label_studio, pid, tmp_path / "train.json", monkeypatch)
    assert coco["stats"]["images"] == 1 and coco["stats"]["hands"] == 1
    assert coco["stats"]["orphan_joints"] == 0 and coco["stats"]["duplicate_joints"] == 0
    ann = coco["annotations"][0]
    k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(21, 3)
    want = kps.copy()
    want[a] += np.asarray(DRAG_SCREEN_PX) / s  # the drag, in image pixels
    tol = max(0.5, 1.5 / s)  # a screen pixel or so
    moved = k[a, :2] - kps[a]
    assert np.allclose(moved, np.asarray(DRAG_SCREEN_PX) / s, atol=tol), (moved, np.asarray(DRAG_SCREEN_PX) / s)
    others = [j for j in range(21) if j != a and inside[j]]
    np.testing.assert_allclose(k[others, :2], kps[others], atol=1e-3)  # nothing else moved
    expected_v = np.where(inside, 2, 0)
    expected_v[b] = 1  # labelled but occluded
    assert k[:, 2].tolist() == expected_v.tolist()
    x1, y1, x2, y2 = hand["bbox_xyxy"]
    np.testing.assert_allclose(ann["bbox"], [max(x1, 0), max(y1, 0), min(x2, W) - max(x1, 0), min(y2, H) - max(y1, 0)],
                               atol=1e-3)  # the box did not move
    assert ann["handedness"] == hand["handedness"] and ann["ls_region_id"] == "h0"
    assert ann["attributes"]["flags"] == ([] if inside.all() else ["truncated"]) and ann["attributes"]["note"] == ""
    assert not page.page_errors, page.page_errors
    print(f"drag test: view open {t_open:.1f} s, labelled and submitted {t_labelled:.1f} s, "
          f"joint {a} moved {moved.round(2).tolist()} px (screen scale {s:.2f}), joint {b} occluded")


def test_labeling_view_of_a_self_made_example_for_docs(page, label_studio, model, artifacts):
    """The docs' picture of the labeling view: a demo example render pre-labelled by the real model, its hand selected."""
    rec = model.record(str(DOCS_EXAMPLE), file=str(DOCS_EXAMPLE))
    assert len(rec["hands"]) == 1, "the model should find the one hand of this example"
    res = push.push_records([rec], [rec["file"]], label_studio.url, label_studio.token, "hands v1", create=True)
    kps = np.asarray(rec["hands"][0]["keypoints_2d"], dtype=np.float64)
    inside = (kps[:, 0] >= 0) & (kps[:, 0] <= rec["width"]) & (kps[:, 1] >= 0) & (kps[:, 1] <= rec["height"])
    open_task(page, label_studio.url, res.project_id, res.task_ids[0], 1 + int(inside.sum()))
    page.locator(".lsf-tree__node_type_rectangleregion .lsf-outliner-item__title").first.click()
    flags_header = page.get_by_text("Selected hand", exact=True)
    flags_header.wait_for(state="visible", timeout=10_000)
    box = flags_header.bounding_box()
    assert box is not None and box["y"] + box["height"] < VIEWPORT["height"], "the per-hand panel needs scrolling"
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "docs_labeling.png"))
    assert not page.page_errors, page.page_errors


@pytest.fixture(scope="session")
def ml_backend(label_studio):
    """`python -m annotate.backend` on a free port of 127.0.0.1, fetching images from the session's Label Studio."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    env.update({"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token,
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")})
    log_path = label_studio.data_dir.parent / "ml-backend.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "annotate.backend", "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"annotate.backend exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"annotate.backend did not answer /health: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        proc.log_path = log_path  # type: ignore[attr-defined]
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def test_smart_box_around_a_missed_hand_gives_21_joints(page, label_studio, ml_backend, model, ge2019, artifacts,
                                                        tmp_path, monkeypatch):
    t0 = time.perf_counter()
    gt = ge2019[GE_SMART]
    rec = {**model.record(gt["path"], file=gt["path"]), "hands": []}  # a hand the model missed: no pre-label
    res = push.push_records([rec], [gt["path"]], label_studio.url, label_studio.token, "browser smart box", create=True)
    pid, tid = res.project_id, res.task_ids[0]
    client = push.connect(label_studio.url, label_studio.token)
    url, proc = ml_backend
    ml = client.ml.create(url=url, project=pid, title="handos", is_interactive=True)  # interactive pre-annotations on
    assert ml.state == "CO" and ml.is_interactive
    open_task(page, label_studio.url, pid, tid, 0)
    assert regions(page) == []
    page.get_by_text("Auto-Annotation", exact=True).click()  # the smart tools show
    page.get_by_text("Auto-Accept Suggestions", exact=True).click()  # the backend's hand lands in the annotation
    page.wait_for_timeout(500)
    page.locator(".lsf-toolbar__group > .lsf-tool_smart").first.click()
    page.locator(".lsf-tool_smart.lsf-tool_active[aria-label=rectangle-tool]").wait_for(timeout=10_000)
    page.locator(".lsf-label", has_text="left hand").first.click()
    page.wait_for_timeout(500)
    W, H = rec["width"], rec["height"]
    g = np.asarray([p for p in gt["hands"][0]["joints_2d"] if p is not None], dtype=np.float64)  # (21, 2) GT px
    lo, hi = g.min(0), g.max(0)
    margin = 0.08 * (hi - lo)
    # xyxy px; kept off the image's border, which the view's fit can leave just outside the drawing stage
    drawn = np.concatenate([np.maximum(lo - margin, [0.05 * W, 0.05 * H]), np.minimum(hi + margin, [0.95 * W, 0.95 * H])])
    to_screen, s = image_to_screen(page, W)
    x1, y1 = to_screen(*drawn[:2])
    x2, y2 = to_screen(*drawn[2:])
    t_draw = time.perf_counter()
    page.mouse.move(x1, y1)
    page.mouse.down()
    page.mouse.move(x2, y2, steps=10)
    page.mouse.up()
    try:
        page.wait_for_function("() => window.Htx.annotationStore.selected.regions"
                               ".filter(r => r.type === 'keypointregion').length >= 21", timeout=60_000)
    finally:
        page.screenshot(path=str(artifacts / "labeling_smart_box.png"))
    t_joints = time.perf_counter() - t_draw
    page.wait_for_timeout(500)
    got = regions(page)
    boxes = [r for r in got if r["type"] == "rectangleregion"]
    assert len(boxes) == 1 and len(got) == 22  # the drawn box became the backend's hand: one box, 21 joints in it
    assert all(r["parent"] == boxes[0]["id"] for r in got if r["type"] == "keypointregion")
    page.screenshot(path=str(artifacts / "labeling_smart_box.png"))
    submit_and_wait(page, client, tid)
    assert b'"POST /predict' in Path(proc.log_path).read_bytes()

    coco = export_project(label_studio, pid, tmp_path / "train.json", monkeypatch)
    assert coco["stats"]["hands"] == 1 and coco["stats"]["orphan_joints"] == 0
    ann = coco["annotations"][0]
    k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(21, 3)
    assert (k[:, 2] == 2).all() and ann["num_keypoints"] == 21
    bx, by, bw, bh = ann["bbox"]
    pad = 0.25 * max(drawn[2] - drawn[0], drawn[3] - drawn[1])
    assert bx >= drawn[0] - pad and by >= drawn[1] - pad and bx + bw <= drawn[2] + pad and by + bh <= drawn[3] + pad
    err = np.linalg.norm(k[:, :2] - np.asarray(gt["hands"][0]["joints_2d"], dtype=np.float64), axis=1)
    size = float(max(hi - lo))
    assert err.mean() < 0.15 * size, f"mean joint error {err.mean():.1f} px for a {size:.0f} px hand"
    assert not page.page_errors, page.page_errors
    print(f"smart box: 21 joints {t_joints:.1f} s after the box was drawn; mean error {err.mean():.1f} px "
          f"({err.mean() / size:.3f} of the hand); whole test {time.perf_counter() - t0:.1f} s")
