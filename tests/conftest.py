"""Shared fixtures: paths, the real data sets, and the model loaded once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("HANDOS_REALDATA", REPO.parent / "shared" / "realdata"))
ARTIFACTS = REPO / "tests" / "artifacts"
# Under CI=true a missing prerequisite (real data, chromium, Label Studio, the MediaPipe venv, an optional
# package) fails the run with its reason: a green CI means every area was tested. Locally it may skip.
# Only tests marked `gpu` (CUDA-only) may skip in CI.
# the Label Studio server fixtures (label_studio, label_studio_boot), shared by every test module
pytest_plugins = ["labelstudio_server"]
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
# fixtures that imply a tier marker, so `-m "not labelstudio and not browser"` deselects them wherever they hide
FIXTURE_MARKERS = {"label_studio": "labelstudio", "label_studio_boot": "labelstudio", "chromium": "browser"}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Property tests draw the same examples in every CI run (a failure there is reproducible, not luck of the draw);
# locally they explore new examples each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    settings.load_profile("ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the servers their fixtures start (Label Studio, a browser)."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = FIXTURE_MARKERS.get(fixture)
            if marker and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason text of a skipped report."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI, a skipped test (not CUDA-only) is a failure that says what was missing."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("gpu") is None:
        report.outcome = "failed"
        report.longrepr = f"CI=true: a missing prerequisite fails the run: {_skip_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """In CI, a module skipped at import (importorskip, module-level skip) is a collection error."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"CI=true: a missing prerequisite fails the run: {_skip_reason(report)}"


@pytest.fixture(autouse=True)
def _seeded_global_rngs() -> None:
    """Every test starts from the same global RNG state (torch, numpy, random): a run's draws never depend on
    which tests ran before it, so a failure reproduces."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real evaluation sets (HANDOS_REALDATA, default ../shared/realdata); skipped locally where absent."""
    if not (REALDATA / "ge2019_realworld" / "derived_annotations.json").exists():
        pytest.skip(f"real data not found at {REALDATA} (set HANDOS_REALDATA)")
    return REALDATA


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """tests/artifacts/ (git-ignored): renders and screenshots saved for a human to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def model():
    """The full pipeline with the shipped weights, loaded once on the CPU."""
    import handos

    return handos.load(device="cpu")


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, headless, launched once per session for every browser test.

    Playwright's sync API allows one driver per thread at a time, so every browser test shares this one
    (never a downloaded browser).
    """
    if not CHROMIUM.exists():
        pytest.skip(f"Debian chromium not installed at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
