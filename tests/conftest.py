"""Shared fixtures: paths, the real data sets, and the model loaded once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("HANDOS_REALDATA", REPO.parent / "shared" / "realdata"))
ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real evaluation sets (../shared/realdata); skipped with a reason where absent."""
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
